import { useEffect, useMemo } from 'react';
import type { ChatState, UserInfo, UserRef } from '@chat/use-chat';
import { PeoplePicker } from './PeoplePicker';

/** Picks someone to make a member of the open room (any member may invite); Escape closes it. */
export function InvitePopover({
  room,
  people,
  findUsers,
  clearUsers,
  online,
  meId,
  onInvite,
  onClose,
}: {
  room: string;
  people: ChatState['people'];
  findUsers: (query: string) => void;
  clearUsers: () => void;
  /** who is online in the room: members already, not offered */
  online: UserRef[];
  meId: number;
  onInvite: (u: UserInfo) => void;
  onClose: () => void;
}) {
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') onClose();
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [onClose]);
  const exclude = useMemo(() => new Set([meId, ...online.map((u) => u.userId)]), [meId, online]);
  return (
    <div className="invite-pop" role="dialog" aria-label={`Invite someone to #${room}`} data-testid="invite-popover">
      <PeoplePicker
        people={people}
        findUsers={findUsers}
        clearUsers={clearUsers}
        exclude={exclude}
        label={`Invite someone to #${room}`}
        testId="invite-people"
        onPick={onInvite}
      />
    </div>
  );
}
