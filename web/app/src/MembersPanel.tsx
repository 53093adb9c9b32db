import type { UserRef } from '@chat/use-chat';
import { Avatar } from './Avatar';

/** Who is online; `total` counts them all when the list is capped (crowded rooms). */
export function MembersPanel({
  title,
  users,
  total,
  meId,
  onMessage,
}: {
  title: string;
  users: UserRef[];
  total: number;
  meId: number;
  onMessage: (u: UserRef) => void;
}) {
  const unlisted = Math.max(0, total - users.length);
  const sorted = [...users].sort((a, b) =>
    a.userId === meId ? -1 : b.userId === meId ? 1 : a.username.localeCompare(b.username),
  );
  return (
    <aside className="members" aria-label={title}>
      <h2 className="section-title">
        {title} <span className="count" data-testid="online-count">{users.length + unlisted}</span>
      </h2>
      <ul className="member-list" data-testid="online-list">
        {sorted.map((u) => (
          <li key={u.userId} className="member" data-testid="online-user" data-user-id={u.userId} data-username={u.username}>
            <Avatar userId={u.userId} name={u.username} size={28} online />
            <span className="member-name">
              {u.username}
              {u.userId === meId && <span className="muted"> (you)</span>}
            </span>
            {u.userId !== meId && (
              <button className="btn btn-ghost btn-sm" onClick={() => onMessage(u)} data-testid="dm-button">
                Message
              </button>
            )}
          </li>
        ))}
        {unlisted > 0 && (
          <li className="muted small member-more" data-testid="online-more">
            and {unlisted.toLocaleString()} more online
          </li>
        )}
        {users.length + unlisted === 0 && <li className="muted small">Nobody here right now.</li>}
      </ul>
    </aside>
  );
}
