import type { ReactNode, Ref } from 'react';
import { Avatar } from './Avatar';
import { LockIcon } from './LockIcon';

/** The header of an open room: its name (cut with an ellipsis when long), who is online, Invite, Leave. */
export function RoomHeader({
  name,
  summary,
  onOpenNav,
  unread,
  members,
  isPrivate,
  inviting,
  onInvite,
  onLeave,
  extra,
}: {
  name: string;
  /** "3 online · description", or what is known while it is not */
  summary: string;
  onOpenNav: () => void;
  unread: number;
  members: MembersToggle;
  isPrivate: boolean;
  /** the invite picker is open */
  inviting: boolean;
  onInvite: () => void;
  onLeave: () => void;
  /** more buttons (search) */
  extra?: ReactNode;
}) {
  return (
    <header className="conv-head">
      <MenuButton onClick={onOpenNav} unread={unread} />
      <div className="conv-head-text">
        <h1 data-testid="conv-title" title={`#${name}`}>
          <span className="hash">#</span>
          <span className="conv-name">{name}</span>
        </h1>
        <p className="muted small conv-summary">
          {isPrivate && (
            <span className="lock" title="Private room: members only" data-testid="private-room">
              <LockIcon /> Private ·{' '}
            </span>
          )}
          {summary}
        </p>
      </div>
      {extra}
      <MembersButton {...members} />
      <button
        className="btn btn-ghost btn-sm conv-action invite-btn"
        aria-label="Invite someone"
        aria-expanded={inviting}
        onClick={onInvite}
        data-testid="invite-button"
      >
        <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round">
          <circle cx="10" cy="8" r="3.5" />
          <path d="M3.5 20c.6-3.6 3.2-5.5 6.5-5.5s5.9 1.9 6.5 5.5M19 8v6M16 11h6" />
        </svg>
        <span className="btn-label">Invite</span>
      </button>
      <button className="btn btn-ghost btn-sm conv-action" onClick={onLeave} data-testid="leave-room">
        Leave
      </button>
    </header>
  );
}

/**
 * The header of a direct conversation. `online`: known online from a room we share, or as the
 * server's people search said (which also says offline); null: nothing is said (not known).
 */
export function DmHeader({
  userId,
  username,
  online,
  onOpenNav,
  unread,
  members,
  extra,
}: {
  userId: number;
  username: string;
  online: boolean | null;
  onOpenNav: () => void;
  unread: number;
  members: MembersToggle;
  /** more buttons (search) */
  extra?: ReactNode;
}) {
  return (
    <header className="conv-head">
      <MenuButton onClick={onOpenNav} unread={unread} />
      <div className="conv-head-user conv-head-text">
        <Avatar userId={userId} name={username} size={32} online={online ?? undefined} />
        <div className="conv-head-text">
          <h1 data-testid="conv-title" title={username}>
            <span className="conv-name" dir="auto">
              {username}
            </span>
          </h1>
          <p className="muted small conv-summary" data-testid="dm-presence">
            {online === null ? 'Direct message' : online ? 'Online · direct message' : 'Offline · direct message'}
          </p>
        </div>
      </div>
      {extra}
      <MembersButton {...members} />
    </header>
  );
}

function MenuButton({ onClick, unread }: { onClick: () => void; unread: number }) {
  return (
    <button className="menu-btn icon-btn" aria-label="Open conversations" onClick={onClick}>
      <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
        <path d="M4 6h16M4 12h16M4 18h16" stroke="currentColor" strokeWidth="2" strokeLinecap="round" />
      </svg>
      {unread > 0 && <span className="menu-dot" />}
    </button>
  );
}

/** The list of who is online, a drawer on narrow screens (beside the conversation on wide ones). */
export interface MembersToggle {
  open: boolean;
  onToggle: () => void;
  buttonRef: Ref<HTMLButtonElement>;
}

function MembersButton({ open, onToggle, buttonRef }: MembersToggle) {
  return (
    <button
      ref={buttonRef}
      className="members-btn icon-btn"
      aria-label="Who is online"
      aria-expanded={open}
      aria-controls="members-panel"
      onClick={onToggle}
      data-testid="members-toggle"
    >
      <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round">
        <circle cx="9" cy="8" r="3.5" />
        <path d="M2.5 20c.6-3.6 3.2-5.5 6.5-5.5s5.9 1.9 6.5 5.5" />
        <path d="M16 4.8a3.5 3.5 0 0 1 0 6.4M18.5 14.8c1.6.8 2.7 2.5 3 5.2" />
      </svg>
    </button>
  );
}
