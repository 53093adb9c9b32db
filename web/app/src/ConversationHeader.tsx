import { Avatar } from './Avatar';

/** The header of an open room: its name (cut with an ellipsis when long), who is online, Leave. */
export function RoomHeader({
  name,
  summary,
  onOpenNav,
  unread,
  onLeave,
}: {
  name: string;
  /** "3 online · description", or what is known while it is not */
  summary: string;
  onOpenNav: () => void;
  unread: number;
  onLeave: () => void;
}) {
  return (
    <header className="conv-head">
      <MenuButton onClick={onOpenNav} unread={unread} />
      <div className="conv-head-text">
        <h1 data-testid="conv-title" title={`#${name}`}>
          <span className="hash">#</span>
          <span className="conv-name">{name}</span>
        </h1>
        <p className="muted small conv-summary">{summary}</p>
      </div>
      <button className="btn btn-ghost btn-sm conv-action" onClick={onLeave} data-testid="leave-room">
        Leave
      </button>
    </header>
  );
}

/**
 * The header of a direct conversation. `online`: known online from a room we share; otherwise
 * nothing is said, as the protocol has no user-level presence (they may well be connected).
 */
export function DmHeader({
  userId,
  username,
  online,
  onOpenNav,
  unread,
}: {
  userId: number;
  username: string;
  online: boolean;
  onOpenNav: () => void;
  unread: number;
}) {
  return (
    <header className="conv-head">
      <MenuButton onClick={onOpenNav} unread={unread} />
      <div className="conv-head-user conv-head-text">
        <Avatar userId={userId} name={username} size={32} online={online || undefined} />
        <div className="conv-head-text">
          <h1 data-testid="conv-title" title={username}>
            <span className="conv-name" dir="auto">
              {username}
            </span>
          </h1>
          <p className="muted small conv-summary" data-testid="dm-presence">
            {online ? 'Online · direct message' : 'Direct message'}
          </p>
        </div>
      </div>
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
