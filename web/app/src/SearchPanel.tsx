import { useEffect, useRef, useState, type FormEvent } from 'react';
import type { DirectMessage, RoomMessage, SearchState } from '@chat/use-chat';
import { formatDay, formatTime } from './format';

type Msg = RoomMessage | DirectMessage;

/** Searching my rooms and conversations: a query, then results (newest first) that open where they were said. */
export function SearchPanel({
  search,
  meId,
  nameOf,
  onSearch,
  onOpen,
  onClose,
}: {
  search: SearchState | null;
  meId: number;
  nameOf: (userId: number) => string;
  onSearch: (query: string) => void;
  onOpen: (m: Msg) => void;
  onClose: () => void;
}) {
  const [query, setQuery] = useState(search?.query ?? '');
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (query.trim()) onSearch(query);
  };
  const where = (m: Msg) => ('room' in m && typeof m.room === 'string' ? `#${m.room}` : `DM with ${nameOf(m.fromUser === meId ? (m as DirectMessage).to : m.fromUser)}`);
  return (
    <section className="search-panel" aria-label="Search messages" data-testid="search-panel">
      <form className="search-form" onSubmit={submit} role="search">
        <input
          ref={input}
          value={query}
          onChange={(e) => setQuery(e.target.value)}
          onKeyDown={(e) => e.key === 'Escape' && onClose()}
          placeholder="Search messages"
          aria-label="Search messages"
          data-testid="search-input"
          maxLength={256}
        />
        <button className="btn btn-primary btn-sm" type="submit" disabled={!query.trim()}>
          Search
        </button>
        <button className="icon-btn" type="button" aria-label="Close search" onClick={onClose} data-testid="search-close">
          ×
        </button>
      </form>
      {search && (
        <div className="search-results" data-testid="search-results" aria-live="polite">
          {search.results === null ? (
            <p className="muted small">Searching…</p>
          ) : search.results.length === 0 ? (
            <p className="muted small" data-testid="search-empty">
              Nothing found for “{search.query}”.
            </p>
          ) : (
            <ul>
              {search.results.map((m) => (
                <li key={m.id}>
                  <button className="search-result" onClick={() => onOpen(m)} data-testid="search-result" data-id={m.id}>
                    <span className="search-where small muted">
                      {where(m)} · <bdi>{m.username}</bdi> · {formatDay(m.timestamp)} {formatTime(m.timestamp)}
                    </span>
                    <span className="search-text" dir="auto">
                      {m.content}
                    </span>
                  </button>
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}
