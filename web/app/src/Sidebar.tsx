import { useState, type FormEvent } from 'react';
import {
  dmKey,
  roomKey,
  type ChatState,
  type ConnectionStatus,
  type ConversationKey,
  type RoomInfo,
  type UserRef,
} from '@chat/use-chat';
import { Avatar } from './Avatar';
import { ConnectionPill } from './ConnectionStatus';
import { LockIcon } from './LockIcon';
import { PeoplePicker } from './PeoplePicker';
import { useRoomNameField } from './roomNameField';

export type Target = { kind: 'room'; room: string } | { kind: 'dm'; userId: number };

/** The conversation key of a target (`r:<room>` | `d:<userId>`), as the hook's `loadOlder` and `setReadingBack` take it. */
export const targetKey = (t: Target): ConversationKey => (t.kind === 'room' ? roomKey(t.room) : dmKey(t.userId));

interface Props {
  me: UserRef;
  status: ConnectionStatus;
  /** my rooms (the others are found in the room browser) */
  rooms: RoomInfo[];
  /** `online`: seen in a room I am in, or as the latest search said; null: not known */
  dms: Array<UserRef & { online: boolean | null }>;
  /** the people search, for a new conversation */
  people: ChatState['people'];
  findUsers: (query: string) => void;
  clearUsers: () => void;
  onBrowseRooms: () => void;
  active: Target | null;
  unread: Record<string, number>;
  /** unread mentions of me, by conversation key */
  mentions: Record<string, number>;
  onSelect: (t: Target) => void;
  onJoin: (room: string) => void;
  onStartDm: (u: UserRef) => void;
  onSignOut: () => void;
}

export function Sidebar(p: Props) {
  const roomField = useRoomNameField();
  const [picking, setPicking] = useState(false);

  function join(e: FormEvent) {
    e.preventDefault();
    // Nothing typed (or a lone '#'): nothing to join, and nothing to complain about either.
    if (!roomField.name) return;
    const name = roomField.validName();
    if (!name) return;
    roomField.clear();
    p.onJoin(name);
  }

  const isActive = (t: Target) => p.active !== null && targetKey(p.active) === targetKey(t);
  const notMe = new Set([p.me.userId]);

  return (
    <aside className="sidebar">
      <div className="sidebar-head">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true" />
          <span>Chat</span>
        </div>
        <ConnectionPill status={p.status} />
      </div>

      <nav className="sidebar-scroll" aria-label="Conversations">
        <section>
          <h2 className="section-title">Rooms</h2>
          <ul className="nav-list" data-testid="room-list">
            {p.rooms.map((r) => {
              const t: Target = { kind: 'room', room: r.name };
              const n = p.unread[targetKey(t)] ?? 0;
              return (
                <li key={r.name}>
                  <button
                    className={`nav-item ${isActive(t) ? 'is-active' : ''} ${n ? 'has-unread' : ''}`}
                    onClick={() => p.onSelect(t)}
                    title={r.description || r.name}
                    data-testid="room-item"
                    data-room={r.name}
                    data-private={!!r.private}
                  >
                    <span className="hash" aria-hidden="true">
                      {r.private ? <LockIcon /> : '#'}
                    </span>
                    <span className="nav-label">{r.name}</span>
                    <UnreadBadges unread={n} mentions={p.mentions[targetKey(t)] ?? 0} testId="room-unread" />
                    <RoomOnlineCount online={p.status === 'open' ? r.online : null} />
                  </button>
                </li>
              );
            })}
          </ul>
          <form className="join-form" onSubmit={join}>
            <input
              value={roomField.text}
              onChange={roomField.onChange}
              placeholder="Join or create a room"
              aria-label="Join or create a room"
              data-testid="join-input"
            />
            <button className="btn btn-ghost btn-sm" type="submit" disabled={!roomField.text.trim()}>
              Join
            </button>
          </form>
          {roomField.error && <p className="field-error">{roomField.error}</p>}
          <button className="btn btn-ghost btn-sm browse-btn" onClick={p.onBrowseRooms} data-testid="browse-rooms">
            Browse or create rooms…
          </button>
        </section>

        <section>
          <h2 className="section-title">
            Direct messages
            <button
              className="icon-btn"
              aria-label="New direct message"
              title="New direct message"
              onClick={() => setPicking((x) => !x)}
              data-testid="new-dm"
            >
              +
            </button>
          </h2>
          {picking && (
            <div className="picker" data-testid="dm-picker">
              <PeoplePicker
                people={p.people}
                findUsers={p.findUsers}
                clearUsers={p.clearUsers}
                exclude={notMe}
                label="Find someone to write to"
                testId="dm-people"
                onPick={(u) => {
                  setPicking(false);
                  p.onStartDm(u);
                }}
              />
            </div>
          )}
          <ul className="nav-list">
            {p.dms.map((u) => {
              const t: Target = { kind: 'dm', userId: u.userId };
              const n = p.unread[targetKey(t)] ?? 0;
              return (
                <li key={u.userId}>
                  <button
                    className={`nav-item ${isActive(t) ? 'is-active' : ''} ${n ? 'has-unread' : ''}`}
                    onClick={() => p.onSelect(t)}
                    data-testid="dm-item"
                    data-user-id={u.userId}
                    data-username={u.username}
                    data-online={u.online ?? 'unknown'}
                  >
                    {/* no dot while not known: "offline" could be wrong */}
                    <Avatar userId={u.userId} name={u.username} size={20} online={u.online ?? undefined} />
                    <span className="nav-label" dir="auto" title={u.username}>
                      {u.username}
                    </span>
                    <UnreadBadges unread={n} mentions={p.mentions[targetKey(t)] ?? 0} testId="dm-unread" />
                  </button>
                </li>
              );
            })}
            {p.dms.length === 0 && <li className="muted small empty-hint">Start one with “+”.</li>}
          </ul>
        </section>
      </nav>

      <div className="sidebar-foot">
        <Avatar userId={p.me.userId} name={p.me.username} size={32} online={p.status === 'open'} />
        <div className="me">
          <strong data-testid="me" dir="auto" title={p.me.username}>
            {p.me.username}
          </strong>
          <span className="muted small">{p.status === 'open' ? 'Online' : 'Offline'}</span>
        </div>
        <button className="btn btn-ghost btn-sm" onClick={p.onSignOut} data-testid="sign-out">
          Sign out
        </button>
      </div>
    </aside>
  );
}

/** A room's online count; unknown (null) while disconnected, when the last one known may be stale. */
function RoomOnlineCount({ online }: { online: number | null }) {
  return (
    <span
      className={`online-count ${online === null ? 'is-unknown' : ''}`}
      title={online === null ? 'Online count unknown while disconnected' : `${online} online`}
      data-testid="room-online"
    >
      <span className="mini-dot" aria-hidden="true" />
      {online ?? '–'}
    </span>
  );
}

/** A conversation's unread count, and apart from it how many of those mention me. */
function UnreadBadges({ unread, mentions, testId }: { unread: number; mentions: number; testId: string }) {
  return (
    <>
      {mentions > 0 && (
        <span className="badge badge-mention" data-testid="mention-badge" title={`${mentions} unread mention${mentions === 1 ? '' : 's'} of you`}>
          @{mentions}
        </span>
      )}
      {unread > 0 && (
        <span className="badge badge-unread" data-testid={testId} title={`${unread} unread`}>
          {unread}
        </span>
      )}
    </>
  );
}
