import { useEffect, useId, useState, type FormEvent } from 'react';
import type { RoomInfo } from '@chat/use-chat';
import { LockIcon } from './LockIcon';
import { useRoomNameField } from './roomNameField';
import './membership.css';

/**
 * How often the rooms list is asked for while the browser is open (ms): a room someone creates
 * shows within a few seconds. The server reads its list at most once a second, so this costs one
 * cached answer per open browser, never a query per request.
 */
const ROOMS_POLL_MS = 3_000;

export interface NewRoom {
  name: string;
  description: string;
  private: boolean;
}

/**
 * The rooms there are (public ones, and the private ones I am in), to open or join, and a form
 * to create one, public or private. The list is asked for again every few seconds while open, and
 * when the window gets the focus back.
 */
export function RoomBrowser({
  rooms,
  mine,
  connected,
  onRefresh,
  onOpen,
  onJoin,
  onCreate,
  onClose,
}: {
  rooms: RoomInfo[];
  /** the rooms I am a member of */
  mine: ReadonlySet<string>;
  connected: boolean;
  onRefresh: () => void;
  onOpen: (room: string) => void;
  onJoin: (room: string) => void;
  onCreate: (room: NewRoom) => void;
  onClose: () => void;
}) {
  const titleId = useId();
  const [filter, setFilter] = useState('');
  const nameField = useRoomNameField();
  const [description, setDescription] = useState('');
  const [isPrivate, setPrivate] = useState(false);

  useEffect(() => {
    if (!connected) return;
    onRefresh();
    const timer = setInterval(onRefresh, ROOMS_POLL_MS);
    window.addEventListener('focus', onRefresh);
    return () => {
      clearInterval(timer);
      window.removeEventListener('focus', onRefresh);
    };
  }, [connected, onRefresh]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') onClose();
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [onClose]);

  function create(e: FormEvent) {
    e.preventDefault();
    const room = nameField.validName();
    if (!room) return;
    if (rooms.some((r) => r.name === room) || mine.has(room)) {
      nameField.setError(`#${room} exists already.`);
      return;
    }
    onCreate({ name: room, description: description.trim(), private: isPrivate });
  }

  const f = filter.trim().toLowerCase();
  const shown = rooms.filter((r) => !f || r.name.toLowerCase().includes(f));

  return (
    <div className="dialog-layer">
      <button className="dialog-scrim" aria-label="Close the room browser" tabIndex={-1} onClick={onClose} />
      <section className="dialog" role="dialog" aria-modal="true" aria-labelledby={titleId} data-testid="room-browser">
        <header className="dialog-head">
          <h2 id={titleId}>Rooms</h2>
          <button className="icon-btn" aria-label="Close" onClick={onClose} data-testid="room-browser-close">
            ×
          </button>
        </header>
        <input
          className="dialog-input"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
          placeholder="Filter rooms"
          aria-label="Filter rooms"
          data-testid="room-filter"
        />
        <ul className="browser-list">
          {shown.map((r) => {
            const member = mine.has(r.name);
            return (
              <li key={r.name} className="browser-room" data-testid="browser-room" data-room={r.name} data-member={member}>
                <div className="browser-room-text">
                  <strong className="browser-room-name">
                    {r.private ? <LockIcon /> : <span aria-hidden="true">#</span>} {r.name}
                  </strong>
                  <span className="muted small">
                    {typeof r.members === 'number' ? `${r.members} ${r.members === 1 ? 'member' : 'members'} · ` : ''}
                    {r.online} online{r.description ? ` · ${r.description}` : ''}
                  </span>
                </div>
                {member ? (
                  <button className="btn btn-ghost btn-sm" onClick={() => onOpen(r.name)}>
                    Open
                  </button>
                ) : (
                  <button className="btn btn-primary btn-sm" onClick={() => onJoin(r.name)} data-testid="browser-join">
                    Join
                  </button>
                )}
              </li>
            );
          })}
          {shown.length === 0 && <li className="muted small people-note">{rooms.length ? 'No room matches.' : 'No rooms yet.'}</li>}
        </ul>
        <form className="create-room" onSubmit={create} data-testid="create-room">
          <h3>Create a room</h3>
          <input
            className="dialog-input"
            value={nameField.text}
            onChange={nameField.onChange}
            placeholder="name, e.g. design-team"
            aria-label="Name of the new room"
            data-testid="create-room-name"
          />
          <input
            className="dialog-input"
            value={description}
            maxLength={500}
            onChange={(e) => setDescription(e.target.value)}
            placeholder="What is it about? (optional)"
            aria-label="Description of the new room"
          />
          <label className="create-room-private">
            <input type="checkbox" checked={isPrivate} onChange={(e) => setPrivate(e.target.checked)} data-testid="create-room-private" />
            Private: only people invited can find and join it
          </label>
          {nameField.error && <p className="form-error">{nameField.error}</p>}
          <button className="btn btn-primary" type="submit" disabled={!nameField.text.trim() || !connected} data-testid="create-room-submit">
            Create {isPrivate ? 'private room' : 'room'}
          </button>
        </form>
      </section>
    </div>
  );
}
