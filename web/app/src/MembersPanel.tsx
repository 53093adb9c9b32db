import { useEffect, useRef } from 'react';
import type { UserRef } from '@chat/use-chat';
import { Avatar } from './Avatar';

/**
 * Who is online; `total` counts them all when the list is capped (crowded rooms). null: not known
 * right now (disconnected, or joining the room): `unknownNote` says why, instead of a 0.
 * `open`: shown as a drawer on narrow screens (where it is otherwise hidden), focused when opened.
 */
export function MembersPanel({
  title,
  users,
  total,
  unknownNote,
  meId,
  open,
  onMessage,
  onRemove,
}: {
  title: string;
  users: UserRef[];
  total: number | null;
  unknownNote: string;
  meId: number;
  open: boolean;
  onMessage: (u: UserRef) => void;
  /** the room's owner may remove its members (absent: not theirs to remove) */
  onRemove?: (u: UserRef) => void;
}) {
  const ref = useRef<HTMLElement>(null);
  useEffect(() => {
    if (open) ref.current?.focus();
  }, [open]);
  const unlisted = total === null ? 0 : Math.max(0, total - users.length);
  const sorted = [...users].sort((a, b) =>
    a.userId === meId ? -1 : b.userId === meId ? 1 : a.username.localeCompare(b.username),
  );
  return (
    <aside
      ref={ref}
      id="members-panel"
      className={`members ${open ? 'is-open' : ''}`}
      aria-label={title}
      tabIndex={-1}
      data-testid="members-panel"
    >
      <h2 className="section-title">
        <span className="section-title-text" title={title}>
          {title}
        </span>
        <span className="count" data-testid="online-count">
          {total === null ? '–' : users.length + unlisted}
        </span>
      </h2>
      <ul className="member-list" data-testid="online-list">
        {total === null ? (
          <li className="muted small" data-testid="online-unknown">
            {unknownNote}
          </li>
        ) : (
          <>
            {sorted.map((u) => (
              <Member key={u.userId} user={u} isMe={u.userId === meId} onMessage={onMessage} onRemove={onRemove} />
            ))}
            {unlisted > 0 && (
              <li className="muted small member-more" data-testid="online-more">
                and {unlisted.toLocaleString()} more online
              </li>
            )}
            {users.length + unlisted === 0 && <li className="muted small">Nobody here right now.</li>}
          </>
        )}
      </ul>
    </aside>
  );
}

function Member({
  user: u,
  isMe,
  onMessage,
  onRemove,
}: {
  user: UserRef;
  isMe: boolean;
  onMessage: (u: UserRef) => void;
  onRemove?: (u: UserRef) => void;
}) {
  return (
    <li className="member" data-testid="online-user" data-user-id={u.userId} data-username={u.username} data-online="true">
      <Avatar userId={u.userId} name={u.username} size={28} online />
      <span className="member-name" title={u.username}>
        <bdi>{u.username}</bdi>
        {isMe && <span className="muted"> (you)</span>}
      </span>
      {!isMe && (
        <button className="btn btn-ghost btn-sm" onClick={() => onMessage(u)} data-testid="dm-button">
          Message
        </button>
      )}
      {!isMe && onRemove && (
        <button
          className="icon-btn btn-remove"
          onClick={() => onRemove(u)}
          aria-label={`Remove ${u.username} from the room`}
          title="Remove from the room"
          data-testid="remove-member"
        >
          ×
        </button>
      )}
    </li>
  );
}
