import { useEffect, useState } from 'react';
import type { ChatState, UserInfo } from '@chat/use-chat';
import { Avatar } from './Avatar';
import './membership.css';

/** How long typing pauses before the search is sent: one `users` request per pause, not per key (ms). */
const SEARCH_DEBOUNCE_MS = 250;

/**
 * Finds people by the start of their name (the server's `users`): online ones first, each with a
 * dot, offline ones too (anyone can be written to or invited). Everyone while the field is empty.
 */
export function PeoplePicker({
  people,
  findUsers,
  clearUsers,
  exclude,
  label,
  onPick,
  testId,
}: {
  people: ChatState['people'];
  findUsers: (query: string) => void;
  clearUsers: () => void;
  /** not offered (me, those already in) */
  exclude: ReadonlySet<number>;
  label: string;
  onPick: (u: UserInfo) => void;
  testId: string;
}) {
  const [query, setQuery] = useState('');
  useEffect(() => {
    const timer = setTimeout(() => findUsers(query), query ? SEARCH_DEBOUNCE_MS : 0);
    return () => clearTimeout(timer);
  }, [query, findUsers]);
  useEffect(() => clearUsers, [clearUsers]);
  const results = people?.results?.filter((u) => !exclude.has(u.userId)) ?? null;
  return (
    <div className="people-picker" data-testid={testId}>
      <input
        className="people-search"
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        placeholder="Search people by name"
        aria-label={label}
        autoFocus
        data-testid="people-search"
      />
      <ul className="people-results" aria-busy={results === null}>
        {results === null ? (
          <li className="muted small people-note">Searching…</li>
        ) : results.length === 0 ? (
          <li className="muted small people-note">Nobody found.</li>
        ) : (
          results.map((u) => (
            <li key={u.userId}>
              <button
                className="people-item"
                onClick={() => onPick(u)}
                data-testid="person"
                data-username={u.username}
                data-online={u.online}
              >
                <Avatar userId={u.userId} name={u.username} size={22} online={u.online} />
                <span className="nav-label" dir="auto" title={u.username}>
                  {u.username}
                </span>
                <span className="people-state">{u.online ? 'online' : 'offline'}</span>
              </button>
            </li>
          ))
        )}
      </ul>
    </div>
  );
}
