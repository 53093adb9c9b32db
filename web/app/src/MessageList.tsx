import { Fragment, useEffect, useLayoutEffect, useRef, useState, type ReactNode } from 'react';
import { isRetryable, mentionsUser, type DirectMessage, type PendingMessage, type RoomMessage } from '@chat/use-chat';
import { Avatar } from './Avatar';
import { formatDay, formatTime, parseTime } from './format';
import { Markup } from './markup/Markup';
import { MessageEditor } from './MessageEditor';
import { ReactionChips, ReactionPicker } from './Reactions';

type Msg = RoomMessage | DirectMessage;

/** What the reader can do to a message: react (anyone), edit and delete (its author). */
export interface MessageActions {
  nameOf: (userId: number) => string;
  onEdit: (id: number) => void;
  onEditSave: (id: number, text: string) => void;
  onEditCancel: () => void;
  /** asks first */
  onDelete: (m: Msg) => void;
  onReact: (id: number, emoji: string, on: boolean) => void;
}

/** How long a message brought into view (search result, first unread) stays highlighted (ms). */
const HIGHLIGHT_MS = 4000;

interface Props {
  messages: Msg[];
  pending: PendingMessage[];
  meId: number;
  meName: string;
  historyLoaded: boolean;
  hasMore: boolean;
  loadingOlder: boolean;
  onLoadOlder: () => void;
  /**
   * The reader left the newest messages (true) or came back to them (false); false again when the
   * list goes away. Must keep its identity: a new one while reading back would end and start it.
   */
  onReadingBack: (readingBack: boolean) => void;
  onRetry: (clientId: string) => void;
  onDiscard: (clientId: string) => void;
  beginningText: ReactNode;
  /** the "new messages" line goes before the first message of others after this id; null: no line */
  unreadAfter?: number | null;
  /** a message to bring into view and highlight (a search result); a new `seq` asks again */
  focus?: { id: number; seq: number } | null;
  /** the message of mine being edited in place */
  editingId?: number | null;
  actions?: MessageActions;
}

const GROUP_WINDOW_MS = 5 * 60_000;
/** Closer than this to the end counts as reading the newest messages (px). */
const BOTTOM_SLACK_PX = 60;

export function MessageList(props: Props) {
  const { messages, pending, meId, meName, historyLoaded, hasMore, loadingOlder, onLoadOlder, onReadingBack } = props;
  const ref = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const prevFirstId = useRef<number | null>(null);
  const prevHeight = useRef(0);
  // The list's size when last measured: a scroll event at another size comes from a resize.
  const size = useRef({ width: 0, height: 0 });
  // What was already pending when the list was shown: only messages sent from here on scroll it.
  const seenPending = useRef(new Set(pending.map((p) => p.clientId)));
  // The newest message id when the reader scrolled away from the newest messages; null: they are there.
  const [awayFrom, setAwayFrom] = useState<number | null>(null);
  const readingBack = awayFrom !== null;
  const unreadAfter = props.unreadAfter ?? null;
  // A message to bring into view: by id, or the first unread one (after the read mark).
  const [target, setTarget] = useState<{ id: number } | { after: number } | null>(null);
  const [highlight, setHighlight] = useState<number | null>(null);
  // Whether the first unread message is out of sight above (or not loaded yet): offer the jump.
  const [unreadAbove, setUnreadAbove] = useState(false);
  const focusSeq = props.focus?.seq;
  const focusId = props.focus?.id;
  useEffect(() => {
    if (focusId !== undefined) setTarget({ id: focusId });
  }, [focusId, focusSeq]);

  // The target is brought into view once loaded; older pages are loaded until it is.
  useEffect(() => {
    if (!target) return;
    const found = 'id' in target ? messages.find((m) => m.id === target.id) : messages.find((m) => m.id > target.after && m.fromUser !== meId);
    if (found) {
      stick.current = false;
      ref.current?.querySelector(`[data-testid=message][data-id="${found.id}"]`)?.scrollIntoView({ block: 'center' });
      setHighlight(found.id);
      setTarget(null);
      return;
    }
    const ref_ = 'id' in target ? target.id : target.after;
    const older = messages.length === 0 || messages[0].id > ref_;
    if (older && hasMore && historyLoaded) {
      if (!loadingOlder) onLoadOlder();
    } else if (historyLoaded && !loadingOlder) {
      setTarget(null);
    }
  }, [target, messages, meId, hasMore, historyLoaded, loadingOlder, onLoadOlder]);

  useEffect(() => {
    if (highlight === null) return;
    const t = setTimeout(() => setHighlight(null), HIGHLIGHT_MS);
    return () => clearTimeout(t);
  }, [highlight]);

  function checkUnreadAbove() {
    const el = ref.current;
    if (!el || unreadAfter === null) return setUnreadAbove(false);
    const line = el.querySelector('[data-testid=unread-line]');
    if (line) return setUnreadAbove(line.getBoundingClientRect().bottom < el.getBoundingClientRect().top);
    setUnreadAbove(hasMore && messages.length > 0 && messages[0].id > unreadAfter + 1 && messages.some((m) => m.fromUser !== meId));
  }

  // Keep the view anchored: on prepend (older page) the same message stays under the eye;
  // on append the view follows if it was at the bottom, or if I just sent something (I want to
  // see it, wherever I was reading).
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    if (pending.some((p) => !seenPending.current.has(p.clientId))) stick.current = true;
    seenPending.current = new Set(pending.map((p) => p.clientId));
    const firstId = messages[0]?.id ?? null;
    if (prevFirstId.current !== null && firstId !== null && firstId < prevFirstId.current && !stick.current) {
      el.scrollTop += el.scrollHeight - prevHeight.current;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
    prevFirstId.current = firstId;
    prevHeight.current = el.scrollHeight;
    size.current = { width: el.clientWidth, height: el.clientHeight };
    checkUnreadAbove();
  });

  // The list changes size with the window: a reader at the newest messages stays there; one
  // reading back keeps their place (the browser anchors what they read).
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const observer = new ResizeObserver(() => {
      if (stick.current) el.scrollTop = el.scrollHeight;
      prevHeight.current = el.scrollHeight;
      size.current = { width: el.clientWidth, height: el.clientHeight };
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, []);

  // The hook keeps every message while the reader is back in the history (none dropped under
  // their eyes) and trims the list once they are back at the newest, or gone.
  useEffect(() => {
    if (!readingBack) return;
    onReadingBack(true);
    return () => onReadingBack(false);
  }, [readingBack, onReadingBack]);

  // A first page that does not fill the screen cannot be scrolled: fetch more right away.
  useEffect(() => {
    const el = ref.current;
    if (!el || !historyLoaded || !hasMore || loadingOlder || messages.length === 0) return;
    if (el.scrollHeight <= el.clientHeight + 8) onLoadOlder();
  }, [messages.length, historyLoaded, hasMore, loadingOlder, onLoadOlder]);

  function onScroll() {
    const el = ref.current;
    if (!el) return;
    // Moved by a resize (text reflowed, the browser kept what was read in place), not by the
    // reader: the observer above decides, before the next frame.
    if (el.clientWidth !== size.current.width || el.clientHeight !== size.current.height) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < BOTTOM_SLACK_PX;
    if (stick.current === readingBack) setAwayFrom(stick.current ? null : (messages.at(-1)?.id ?? 0));
    if (el.scrollTop < 150 && hasMore && !loadingOlder && historyLoaded) onLoadOlder();
    checkUnreadAbove();
  }

  function scrollToNewest() {
    const el = ref.current;
    if (!el) return;
    stick.current = true;
    el.scrollTop = el.scrollHeight;
  }

  const newBelow = awayFrom === null ? 0 : countNewFromOthers(messages, awayFrom, meId);
  let prev: Msg | null = null;
  let lineShown = false;
  return (
    <div className="message-pane">
      {unreadAbove && unreadAfter !== null && (
        <button className="jump-unread" onClick={() => setTarget({ after: unreadAfter })} data-testid="jump-unread">
          ↑ Jump to the first unread message
        </button>
      )}
      <div className="message-list" ref={ref} onScroll={onScroll} data-testid="message-list">
        <HistoryEdge historyLoaded={historyLoaded} hasMore={hasMore} loadingOlder={loadingOlder}>
          {props.beginningText}
        </HistoryEdge>
        {messages.map((m) => {
          const lineHere = unreadAfter !== null && !lineShown && m.id > unreadAfter && m.fromUser !== meId;
          if (lineHere) lineShown = true;
          const item = (
            <Fragment key={m.id}>
              {lineHere && (
                <div className="unread-line" role="separator" data-testid="unread-line">
                  <span>New messages</span>
                </div>
              )}
              <MessageItem
                message={m}
                prev={prev}
                afterLine={lineHere}
                mine={m.fromUser === meId}
                meId={meId}
                meName={meName}
                editing={props.editingId === m.id}
                highlighted={highlight === m.id}
                actions={props.actions}
              />
            </Fragment>
          );
          prev = m;
          return item;
        })}
        {pending.map((p) => (
          <PendingItem key={p.clientId} pending={p} meId={meId} meName={meName} onRetry={props.onRetry} onDiscard={props.onDiscard} />
        ))}
      </div>
      {newBelow > 0 && (
        <button className="new-below" onClick={scrollToNewest} data-testid="new-below">
          {newBelow === 1 ? '1 new message' : `${newBelow} new messages`} ↓
        </button>
      )}
    </div>
  );
}

/** How many messages of others came after the id `after` (the list is sorted by id). */
function countNewFromOthers(messages: Msg[], after: number, meId: number): number {
  let n = 0;
  for (let i = messages.length - 1; i >= 0 && messages[i].id > after; i--) if (messages[i].fromUser !== meId) n++;
  return n;
}

/** The top of the list: older messages loading, or the beginning of the conversation. */
function HistoryEdge({
  historyLoaded,
  hasMore,
  loadingOlder,
  children,
}: {
  historyLoaded: boolean;
  hasMore: boolean;
  loadingOlder: boolean;
  children: ReactNode;
}) {
  return (
    <div className="history-edge">
      {loadingOlder && (
        <span className="muted" data-testid="loading-older">
          <span className="spinner" aria-hidden="true" /> Loading older messages…
        </span>
      )}
      {!loadingOlder && historyLoaded && !hasMore && (
        <div className="history-start" data-testid="history-start">
          {children}
        </div>
      )}
      {!historyLoaded && <span className="muted">Loading…</span>}
    </div>
  );
}

/** One message, grouped with the previous one when the same author wrote it shortly before. */
function MessageItem({
  message: m,
  prev,
  mine,
  meId,
  meName,
  editing,
  highlighted,
  actions,
  afterLine,
}: {
  message: Msg;
  prev: Msg | null;
  /** right after the new-messages line: starts a group of its own */
  afterLine: boolean;
  mine: boolean;
  meId: number;
  meName: string;
  editing: boolean;
  highlighted: boolean;
  actions?: MessageActions;
}) {
  const t = parseTime(m.timestamp)?.getTime() ?? 0;
  const pt = prev ? (parseTime(prev.timestamp)?.getTime() ?? 0) : 0;
  const newDay = !prev || formatDay(prev.timestamp) !== formatDay(m.timestamp);
  const grouped = !!prev && !newDay && !afterLine && prev.fromUser === m.fromUser && t - pt < GROUP_WINDOW_MS;
  return (
    <>
      {newDay && (
        <div className="day-divider" role="separator">
          <span>{formatDay(m.timestamp)}</span>
        </div>
      )}
      <article
        className={`message ${grouped ? 'is-grouped' : ''} ${mine ? 'is-mine' : ''} ${!mine && mentionsUser(m.content, meName) ? 'mentions-me' : ''} ${highlighted ? 'is-highlighted' : ''} ${m.deleted ? 'is-deleted' : ''}`}
        data-testid="message"
        data-id={m.id}
        data-from={m.username}
        data-highlighted={highlighted || undefined}
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
              <AuthorName name={m.username} />
              <time dateTime={m.timestamp}>{formatTime(m.timestamp)}</time>
            </header>
          )}
          {/* dir=auto: a message in Hebrew or Arabic reads right to left, punctuation included */}
          {m.deleted ? (
            <p className="message-content tombstone" data-testid="tombstone">
              This message was deleted.
            </p>
          ) : editing && actions ? (
            <MessageEditor initial={m.content} onSave={(text) => actions.onEditSave(m.id, text)} onCancel={actions.onEditCancel} />
          ) : (
            <div className="message-content" dir="auto">
              <Markup content={m.content} username={meName} />
            </div>
          )}
          {m.editedAt && !m.deleted && !editing && (
            <span className="edited muted small" title={`Edited ${formatTime(m.editedAt)}`} data-testid="edited">
              (edited)
            </span>
          )}
          {m.reactions && actions && !m.deleted && (
            <ReactionChips reactions={m.reactions} meId={meId} nameOf={actions.nameOf} onToggle={(e, on) => actions.onReact(m.id, e, on)} />
          )}
        </div>
        {actions && !m.deleted && !editing && (
          <div className="msg-actions" data-testid="message-actions">
            <ReactionPicker mine={(e) => !!m.reactions?.[e]?.includes(meId)} onPick={(e, on) => actions.onReact(m.id, e, on)} />
            {mine && (
              <>
                <button type="button" className="msg-action" onClick={() => actions.onEdit(m.id)} data-testid="edit-button" aria-label="Edit message" title="Edit">
                  ✎
                </button>
                <button type="button" className="msg-action" onClick={() => actions.onDelete(m)} data-testid="delete-button" aria-label="Delete message" title="Delete">
                  🗑
                </button>
              </>
            )}
          </div>
        )}
      </article>
    </>
  );
}

/** A name of any length and script: cut with an ellipsis (full name on hover), in its own direction. */
function AuthorName({ name }: { name: string }) {
  return (
    <span className="message-author" dir="auto" title={name}>
      {name}
    </span>
  );
}

/** A message of mine the server has not confirmed yet: sending, or failed (retry / discard). */
function PendingItem({
  pending: p,
  meId,
  meName,
  onRetry,
  onDiscard,
}: {
  pending: PendingMessage;
  meId: number;
  meName: string;
  onRetry: (clientId: string) => void;
  onDiscard: (clientId: string) => void;
}) {
  return (
    <article
      className={`message is-mine is-pending ${p.status === 'failed' ? 'is-failed' : ''}`}
      data-testid="pending-message"
      data-status={p.status}
    >
      <div className="message-gutter">
        <Avatar userId={meId} name={meName} />
      </div>
      <div className="message-main">
        <header>
          <AuthorName name={meName} />
          {p.status === 'failed' ? (
            <span className="pending-state failed" data-testid="pending-failed">
              {p.error ? `Not delivered: ${p.error.message}` : 'Not delivered'}
              {isRetryable(p) && (
                <>
                  {' · '}
                  <button className="link-btn" onClick={() => onRetry(p.clientId)} data-testid="pending-retry">
                    Retry
                  </button>
                </>
              )}
              {' · '}
              <button className="link-btn" onClick={() => onDiscard(p.clientId)} data-testid="pending-discard">
                Discard
              </button>
            </span>
          ) : (
            <span className="pending-state">Sending…</span>
          )}
        </header>
        <div className="message-content" dir="auto">
          <Markup content={p.content} username={meName} />
        </div>
      </div>
    </article>
  );
}
