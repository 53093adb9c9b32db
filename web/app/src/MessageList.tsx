import { Fragment, useEffect, useLayoutEffect, useRef } from 'react';
import { isRetryable, type DirectMessage, type PendingMessage, type RoomMessage } from '@chat/use-chat';
import { Avatar } from './Avatar';
import { formatDay, formatTime, parseTime } from './format';

type Msg = RoomMessage | DirectMessage;

interface Props {
  messages: Msg[];
  pending: PendingMessage[];
  meId: number;
  meName: string;
  historyLoaded: boolean;
  hasMore: boolean;
  loadingOlder: boolean;
  onLoadOlder: () => void;
  onRetry: (clientId: string) => void;
  onDiscard: (clientId: string) => void;
  beginningText: string;
}

const GROUP_WINDOW_MS = 5 * 60_000;

export function MessageList(props: Props) {
  const { messages, pending, meId, meName, historyLoaded, hasMore, loadingOlder, onLoadOlder } = props;
  const ref = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const prevFirstId = useRef<number | null>(null);
  const prevHeight = useRef(0);

  // Keep the view anchored: on prepend (older page) the same message stays under the eye;
  // on append the view follows if it was at the bottom.
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const firstId = messages[0]?.id ?? null;
    if (prevFirstId.current !== null && firstId !== null && firstId < prevFirstId.current && !stick.current) {
      el.scrollTop += el.scrollHeight - prevHeight.current;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
    prevFirstId.current = firstId;
    prevHeight.current = el.scrollHeight;
  });

  // A first page that does not fill the screen cannot be scrolled: fetch more right away.
  useEffect(() => {
    const el = ref.current;
    if (!el || !historyLoaded || !hasMore || loadingOlder || messages.length === 0) return;
    if (el.scrollHeight <= el.clientHeight + 8) onLoadOlder();
  }, [messages.length, historyLoaded, hasMore, loadingOlder, onLoadOlder]);

  function onScroll() {
    const el = ref.current;
    if (!el) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
    if (el.scrollTop < 150 && hasMore && !loadingOlder && historyLoaded) onLoadOlder();
  }

  let prev: Msg | null = null;
  return (
    <div className="message-list" ref={ref} onScroll={onScroll} data-testid="message-list">
      <div className="history-edge">
        {loadingOlder && (
          <span className="muted" data-testid="loading-older">
            <span className="spinner" aria-hidden="true" /> Loading older messages…
          </span>
        )}
        {!loadingOlder && historyLoaded && !hasMore && (
          <div className="history-start" data-testid="history-start">
            {props.beginningText}
          </div>
        )}
        {!historyLoaded && <span className="muted">Loading…</span>}
      </div>
      {messages.map((m) => {
        const t = parseTime(m.timestamp)?.getTime() ?? 0;
        const pt = prev ? parseTime(prev.timestamp)?.getTime() ?? 0 : 0;
        const newDay = !prev || formatDay(prev.timestamp) !== formatDay(m.timestamp);
        const grouped = !!prev && !newDay && prev.fromUser === m.fromUser && t - pt < GROUP_WINDOW_MS;
        prev = m;
        return (
          <Fragment key={m.id}>
            {newDay && (
              <div className="day-divider" role="separator">
                <span>{formatDay(m.timestamp)}</span>
              </div>
            )}
            <article
              className={`message ${grouped ? 'is-grouped' : ''} ${m.fromUser === meId ? 'is-mine' : ''}`}
              data-testid="message"
              data-id={m.id}
              data-from={m.username}
            >
              <div className="message-gutter">
                {grouped ? (
                  <time className="message-hover-time">{formatTime(m.timestamp)}</time>
                ) : (
                  <Avatar userId={m.fromUser} name={m.username} />
                )}
              </div>
              <div className="message-main">
                {!grouped && (
                  <header>
                    <span className="message-author">{m.username}</span>
                    <time dateTime={m.timestamp}>{formatTime(m.timestamp)}</time>
                  </header>
                )}
                <p className="message-content">{m.content}</p>
              </div>
            </article>
          </Fragment>
        );
      })}
      {pending.map((p) => (
        <article
          key={p.clientId}
          className={`message is-mine is-pending ${p.status === 'failed' ? 'is-failed' : ''}`}
          data-testid="pending-message"
          data-status={p.status}
        >
          <div className="message-gutter">
            <Avatar userId={meId} name={meName} />
          </div>
          <div className="message-main">
            <header>
              <span className="message-author">{meName}</span>
              {p.status === 'failed' ? (
                <span className="pending-state failed" data-testid="pending-failed">
                  {p.error ? `Not delivered: ${p.error.message}` : 'Not delivered'}
                  {isRetryable(p) && (
                    <>
                      {' · '}
                      <button className="link-btn" onClick={() => props.onRetry(p.clientId)} data-testid="pending-retry">
                        Retry
                      </button>
                    </>
                  )}
                  {' · '}
                  <button className="link-btn" onClick={() => props.onDiscard(p.clientId)} data-testid="pending-discard">
                    Discard
                  </button>
                </span>
              ) : (
                <span className="pending-state">Sending…</span>
              )}
            </header>
            <p className="message-content">{p.content}</p>
          </div>
        </article>
      ))}
    </div>
  );
}
