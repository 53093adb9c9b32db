import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import {
  loadUnsent,
  saveUnsent,
  useChat,
  type ChatError,
  type Conversation,
  type DirectMessage,
  type MembershipEvent,
  type PendingMessage,
  type RoomMessage,
  type RoomState,
  type UserRef,
} from '@chat/use-chat';
import type { Unsent } from './App';
import { Composer } from './Composer';
import { ConfirmDialog } from './ConfirmDialog';
import { ConnectionBanner } from './ConnectionStatus';
import { DmHeader, RoomHeader } from './ConversationHeader';
import { wsUrl } from './format';
import { MembersPanel } from './MembersPanel';
import { InvitePopover } from './InvitePopover';
import { MessageList, type MessageActions } from './MessageList';
import { useUnreadTitle, useWindowFocused } from './readTracking';
import { SearchPanel } from './SearchPanel';
import { RoomBrowser, type NewRoom } from './RoomBrowser';
import {
  clearDrafts,
  hasPrefs,
  loadDraft,
  loadPrefs,
  saveDraft,
  savePrefs,
  type Prefs,
  type Session,
} from './session';
import { Sidebar, targetKey, type Target } from './Sidebar';
import { Toasts, useToasts } from './Toasts';

const FRIENDLY: Record<string, string> = {
  rate_limited: 'You are sending too fast. Slow down a little; unsent messages are retried.',
  unavailable: 'The server cannot reach its database right now. Your messages will be retried.',
  not_found: 'Not found.',
  too_large: 'That was too large to send.',
  internal: 'The server had a problem handling that.',
};

function describe(e: ChatError): { title: string; detail?: string } {
  const title = FRIENDLY[e.code] ?? 'Something went wrong';
  return FRIENDLY[e.code] && e.code !== 'not_found' ? { title, detail: undefined } : { title, detail: e.message };
}

/** Who is online in a room: the server's count where it sends one (crowded rooms list fewer users). */
function onlineCount(room: RoomState): number {
  return Math.max(room.online ?? 0, room.users.length);
}

/** Under a room's name: who is online once that is known (joined on an open connection), and its description. */
function roomSummary(room: RoomState, connected: boolean, description: string | null | undefined): string {
  const who = room.status === 'joined' ? `${onlineCount(room)} online` : connected ? 'Joining…' : 'Not connected';
  return description ? `${who} · ${description}` : who;
}

/** The question asked before leaving a room whose messages are not all sent: leaving discards them. */
function leaveUnsentQuestion(room: string, unsent: number): string {
  const what = unsent === 1 ? '1 message you wrote in' : `${unsent} messages you wrote in`;
  return `${what} #${room} ${unsent === 1 ? 'has' : 'have'} not been sent yet and will be discarded. Leave #${room} anyway?`;
}

/** What the user is told when someone else changed their memberships. */
function membershipNotice(e: MembershipEvent): string {
  if (e.kind === 'removed') return `You were removed from #${e.room} by its owner.`;
  return e.by ? `${e.by.username} added you to #${e.room}.` : `You were added to #${e.room}.`;
}

/** What a room and a DM conversation differ in below their headers (see `conversationBody`). */
interface ConversationView {
  conv: Conversation;
  /** the message list's key: a new one per conversation, so its scroll state starts afresh */
  listKey: string;
  /** my messages to this conversation not yet delivered */
  pending: PendingMessage[];
  beginningText: ReactNode;
  placeholder: string;
  onTyping: () => void;
  /** false: refused, nothing queued (the composer keeps the text) */
  onSend: (text: string) => boolean;
}

function initialTarget(prefs: Prefs): Target | null {
  const a = prefs.active;
  if (a?.startsWith('r:') && prefs.rooms.includes(a.slice(2))) return { kind: 'room', room: a.slice(2) };
  if (a?.startsWith('d:') && prefs.dms.some((d) => d.userId === Number(a.slice(2)))) return { kind: 'dm', userId: Number(a.slice(2)) };
  return prefs.rooms[0] ? { kind: 'room', room: prefs.rooms[0] } : null;
}

export function ChatScreen({
  session,
  initialOutbox,
  onSignedOut,
}: {
  session: Session;
  /** what was not delivered when the previous session of this user expired */
  initialOutbox?: PendingMessage[];
  onSignedOut: (why?: string, unsent?: Unsent) => void;
}) {
  // What is still to send: the previous session's (it expired) and what this tab had not
  // delivered before a reload.
  const outboxAtStart = useMemo(() => {
    const all = [...(initialOutbox ?? []), ...loadUnsent(session.userId)];
    return all.filter((m, i) => all.findIndex((o) => o.clientId === m.clientId) === i);
  }, [session.userId, initialOutbox]);
  // A first visit on this device, by a user who is a member of no room, lands in #general.
  const firstVisit = useMemo(() => !hasPrefs(session.userId), [session.userId]);
  const prefs = useMemo(() => {
    const p = loadPrefs(session.userId);
    // the rooms of messages still to send, also if they were not remembered
    for (const m of outboxAtStart) if (m.kind === 'message' && m.room && !p.rooms.includes(m.room)) p.rooms.push(m.room);
    return p;
  }, [session.userId, outboxAtStart]);
  const [active, setActive] = useState<Target | null>(() => initialTarget(prefs));
  const [browsing, setBrowsing] = useState(false);
  const [inviting, setInviting] = useState(false);
  const [owned, setOwned] = useState<string[]>(() => prefs.owned);
  // Narrow screens: the sidebar is a drawer.
  const [navOpen, setNavOpen] = useState(false);
  // Narrow screens: who is online is a drawer too, opened from the conversation's header.
  const [membersOpen, setMembersOpen] = useState(false);
  const membersButton = useRef<HTMLButtonElement>(null);
  const closeMembers = useCallback(() => {
    setMembersOpen(false);
    membersButton.current?.focus();
  }, []);
  useEffect(() => {
    if (!membersOpen) return;
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') closeMembers();
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [membersOpen, closeMembers]);
  const members = { open: membersOpen, onToggle: () => setMembersOpen((o) => !o), buttonRef: membersButton };
  const select = useCallback((t: Target | null) => {
    setActive(t);
    setNavOpen(false);
    setMembersOpen(false);
    setInviting(false);
  }, []);
  const { toasts, push, dismiss } = useToasts();
  const activeKey = active ? targetKey(active) : null;

  const chat = useChat({
    url: wsUrl(),
    getToken: async () => session.token,
    initialRooms: prefs.rooms,
    defaultRooms: firstVisit ? ['general'] : [],
    initialOutbox: outboxAtStart,
    onMembership: (e) => push({ title: membershipNotice(e), tone: 'info' }),
    onError: (e) => {
      if (e.code === 'unauthorized') return; // handled by signing out below
      push({ ...describe(e), tone: 'error' });
    },
  });
  const { openDm, addDm } = chat;

  // List the DM conversations of the last visit (servers that list conversations add the others).
  useEffect(() => {
    for (const d of prefs.dms) addDm(d.userId, d.username);
  }, [prefs, addDm]);

  // A conversation's latest page is loaded when it is opened (once).
  const activeDmId = active?.kind === 'dm' ? active.userId : null;
  useEffect(() => {
    if (activeDmId !== null) openDm(activeDmId);
  }, [activeDmId, openDm]);

  // Remember rooms and DM peers for the next visit.
  const roomNames = Object.keys(chat.joined).sort().join('\n');
  const dmPeers = Object.values(chat.dms)
    .map((d) => `${d.userId}:${d.username}`)
    .join('\n');
  useEffect(() => {
    savePrefs(session.userId, {
      rooms: roomNames ? roomNames.split('\n') : [],
      dms: dmPeers ? dmPeers.split('\n').map((s) => ({ userId: Number(s.split(':')[0]), username: s.slice(s.indexOf(':') + 1) })) : [],
      active: activeKey,
      owned,
    });
  }, [roomNames, dmPeers, session.userId, activeKey, owned]);

  // ...nor with a reload of the page.
  useEffect(() => saveUnsent(session.userId, chat.outbox), [session.userId, chat.outbox]);

  // Messages written while offline are not lost with the session: sent after signing in again.
  const outboxRef = useRef(chat.outbox);
  outboxRef.current = chat.outbox;
  useEffect(() => {
    if (chat.status === 'unauthorized') {
      onSignedOut('Your session has expired. Please sign in again.', { userId: session.userId, outbox: outboxRef.current });
    }
  }, [chat.status, onSignedOut, session.userId]);


  // The active room may disappear (left here or elsewhere, removed, refused by the server): fall
  // back to another one. Nothing open yet (a first visit): the first room that comes.
  useEffect(() => {
    if (!active || (active.kind === 'room' && !chat.joined[active.room])) {
      const next = Object.keys(chat.joined)[0];
      setActive(next ? { kind: 'room', room: next } : null);
    }
  }, [active, chat.joined]);

  const me: UserRef = chat.me ?? { userId: session.userId, username: session.username };

  const online = useMemo(() => {
    const m = new Map<number, UserRef>();
    for (const r of Object.values(chat.joined)) for (const u of r.users) m.set(u.userId, u);
    if (chat.status === 'open') m.set(me.userId, me);
    return [...m.values()];
  }, [chat.joined, chat.status, me]);
  const onlineIds = useMemo(() => new Set(online.map((u) => u.userId)), [online]);

  // My rooms (the server's list of them follows me across devices); others are found in the room browser.
  const rooms = useMemo(
    () =>
      Object.values(chat.joined)
        .map((r) => {
          const info = chat.rooms.find((x) => x.name === r.name);
          return { ...info, name: r.name, online: info?.online ?? onlineCount(r), private: r.private };
        })
        .sort((a, b) => a.name.localeCompare(b.name)),
    [chat.rooms, chat.joined],
  );
  const mine = useMemo(() => new Set(Object.keys(chat.joined)), [chat.joined]);

  // Latest conversation first, also before its messages are loaded (the server's list says).
  const dms = useMemo(
    () =>
      Object.values(chat.dms)
        .map((d) => ({
          userId: d.userId,
          username: chat.users[d.userId]?.username ?? d.username,
          // seen in a room we share, else as the latest search said; else not known
          online: onlineIds.has(d.userId) || chat.userOnline[d.userId] === true ? true : chat.userOnline[d.userId] === false ? false : null,
          latest: Math.max(d.listedLastId ?? 0, d.messages.at(-1)?.id ?? 0),
        }))
        .sort((a, b) => b.latest - a.latest || a.username.localeCompare(b.username)),
    [chat.dms, chat.users, chat.userOnline, onlineIds],
  );

  const join = useCallback(
    (room: string) => {
      if (chat.join(room)) select({ kind: 'room', room });
    },
    [chat, select],
  );

  const createRoom = useCallback(
    (r: NewRoom) => {
      if (!chat.createRoom(r.name, { private: r.private, description: r.description })) return;
      setOwned((o) => (o.includes(r.name) ? o : [...o, r.name]));
      setBrowsing(false);
      select({ kind: 'room', room: r.name });
    },
    [chat, select],
  );
  const closeBrowser = useCallback(() => setBrowsing(false), []);

  const startDm = useCallback(
    (u: UserRef) => {
      openDm(u.userId, u.username);
      select({ kind: 'dm', userId: u.userId });
    },
    [openDm, select],
  );

  const signOut = () => {
    chat.stop();
    // signing out on purpose abandons unsent messages and drafts (a shared computer)
    saveUnsent(session.userId, []);
    clearDrafts(session.userId);
    onSignedOut();
  };

  const leaveRoom = (name: string) => {
    // Leaving drops the room's unsent messages: not without asking.
    const unsent = chat.outbox.filter((p) => p.kind === 'message' && p.room === name).length;
    if (unsent > 0 && !window.confirm(leaveUnsentQuestion(name, unsent))) return;
    chat.leave(name);
  };

  const room = active?.kind === 'room' ? chat.joined[active.room] : undefined;
  const dm = active?.kind === 'dm' ? chat.dms[active.userId] : undefined;
  const queued = chat.outbox.filter((p) => p.status !== 'failed').length;
  const connected = chat.status === 'open';
  const { loadOlder, setReadingBack, markRead } = chat;
  // Read state (protocol §9): the server's counts, on every device; what is seen is marked read.
  const { unread, mentions, totalUnread } = useMemo(() => {
    const u: Record<string, number> = {};
    const m: Record<string, number> = {};
    let total = 0;
    for (const [key, r] of Object.entries(chat.reads)) {
      u[key] = r.unread;
      m[key] = r.mentions;
      total += r.unread;
    }
    return { unread: u, mentions: m, totalUnread: total };
  }, [chat.reads]);
  useUnreadTitle(totalUnread);
  const mark = activeKey ? chat.reads[activeKey] : undefined;
  // The "new messages" line stays where the conversation was read up to when it was opened.
  const [line, setLine] = useState<{ key: string | null; after: number | null }>({ key: null, after: null });
  useEffect(() => {
    if (line.key !== activeKey) setLine({ key: activeKey, after: mark?.lastReadId ?? null });
    else if (line.after === null && mark) setLine({ key: activeKey, after: mark.lastReadId });
  }, [activeKey, mark, line]);
  const unreadAfter = line.key === activeKey ? line.after : null;
  // Seen: the conversation is open, scrolled to its newest message, in a focused window.
  const [atNewest, setAtNewest] = useState(true);
  const focused = useWindowFocused();
  const activeConv = room ?? dm;
  const newestId = activeConv?.messages.at(-1)?.id;
  const loaded = activeConv?.historyLoaded ?? false;
  useEffect(() => {
    if (activeKey && atNewest && focused && connected && loaded && newestId !== undefined) markRead(activeKey);
  }, [activeKey, atNewest, focused, connected, loaded, newestId, markRead]);

  // Editing, deleting (asked first), reacting; the message search and where it leads.
  const [editingId, setEditingId] = useState<number | null>(null);
  const [toDelete, setToDelete] = useState<RoomMessage | DirectMessage | null>(null);
  // The owner removing someone from a room: asked first.
  const [toRemove, setToRemove] = useState<{ room: string; user: UserRef } | null>(null);
  const [searchOpen, setSearchOpen] = useState(false);
  const [focus, setFocus] = useState<{ key: string; id: number; seq: number } | null>(null);
  useEffect(() => setEditingId(null), [activeKey]);
  const nameOf = useCallback((userId: number) => chat.users[userId]?.username ?? `user ${userId}`, [chat.users]);
  const { editMessage, react, unreact } = chat;
  const focusComposer = () => requestAnimationFrame(() => document.querySelector<HTMLTextAreaElement>('[data-testid=composer] textarea')?.focus());
  const actions: MessageActions = useMemo(
    () => ({
      nameOf,
      onEdit: setEditingId,
      onEditSave: (id, text) => {
        if (editMessage(id, text)) {
          setEditingId(null);
          focusComposer();
        }
      },
      onEditCancel: () => {
        setEditingId(null);
        focusComposer();
      },
      onDelete: setToDelete,
      onReact: (id, emoji, on) => (on ? react(id, emoji) : unreact(id, emoji)),
    }),
    [nameOf, editMessage, react, unreact],
  );
  const editLast = () => {
    const mine = [...((activeConv?.messages ?? []) as Array<RoomMessage | DirectMessage>)].reverse().find((m) => m.fromUser === me.userId && !m.deleted);
    if (!mine) return false;
    setEditingId(mine.id);
    return true;
  };
  const openResult = (m: RoomMessage | DirectMessage) => {
    const t: Target =
      'room' in m && typeof m.room === 'string' ? { kind: 'room', room: m.room } : { kind: 'dm', userId: m.fromUser === me.userId ? (m as DirectMessage).to : m.fromUser };
    if (t.kind === 'room' && !chat.joined[t.room]) chat.join(t.room);
    if (t.kind === 'dm') openDm(t.userId);
    select(t);
    setFocus((f) => ({ key: targetKey(t), id: m.id, seq: (f?.seq ?? 0) + 1 }));
  };
  const focusHere = focus && focus.key === activeKey ? { id: focus.id, seq: focus.seq } : null;
  const searchButton = (
    <button
      className="icon-btn search-btn"
      aria-label="Search messages"
      title="Search messages"
      aria-expanded={searchOpen}
      onClick={() => setSearchOpen((o) => !o)}
      data-testid="search-toggle"
    >
      <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round">
        <circle cx="11" cy="11" r="6.5" />
        <path d="m16 16 4.5 4.5" />
      </svg>
    </button>
  );
  const onLoadOlder = useCallback(() => {
    if (activeKey) loadOlder(activeKey);
  }, [activeKey, loadOlder]);
  const onReadingBack = useCallback(
    (readingBack: boolean) => {
      setAtNewest(!readingBack);
      if (activeKey) setReadingBack(activeKey, readingBack);
    },
    [activeKey, setReadingBack],
  );

  // The text being written in the open conversation, kept when switching (the composer is new per conversation).
  const draft = useMemo(() => (activeKey ? loadDraft(session.userId, activeKey) : ''), [session.userId, activeKey]);
  const onDraftChange = useCallback(
    (text: string) => {
      if (activeKey) saveDraft(session.userId, activeKey, text);
    },
    [session.userId, activeKey],
  );

  const roomInfo = room ? chat.rooms.find((r) => r.name === room.name) : undefined;
  // Unknown (not 0) while disconnected or joining: the last list may be stale.
  const membersTotal = !connected ? null : room ? (room.status === 'joined' ? onlineCount(room) : null) : online.length;
  const banner = (
    <ConnectionBanner status={chat.status} nextRetryAt={chat.nextRetryAt} queued={queued} onRetry={chat.reconnectNow} />
  );
  // A room and a DM differ only in their header and in what `ConversationView` names: the list,
  // the typing line and the composer below are one piece, so both behave the same.
  const conversationBody = (v: ConversationView) => (
    <>
      <MessageList
        key={v.listKey}
        messages={v.conv.messages}
        pending={v.pending}
        meId={me.userId}
        meName={me.username}
        historyLoaded={v.conv.historyLoaded}
        hasMore={v.conv.hasMore}
        loadingOlder={v.conv.loadingOlder}
        onLoadOlder={onLoadOlder}
        onReadingBack={onReadingBack}
        onRetry={chat.retry}
        onDiscard={chat.discard}
        unreadAfter={unreadAfter}
        focus={focusHere}
        editingId={editingId}
        actions={actions}
        beginningText={v.beginningText}
      />
      <TypingLine typing={v.conv.typing} />
      <Composer
        key={`composer:${activeKey}`}
        placeholder={v.placeholder}
        initialText={draft}
        onTextChange={onDraftChange}
        offline={!connected}
        onTyping={v.onTyping}
        onEditLast={editLast}
        onSend={v.onSend}
      />
    </>
  );

  return (
    <div className={`app-shell ${navOpen ? 'nav-open' : ''} ${membersOpen ? 'members-open' : ''}`}>
      <button className="nav-scrim" aria-label="Close menu" onClick={() => setNavOpen(false)} />
      <button className="members-scrim" aria-label="Close the list of who is online" tabIndex={-1} onClick={closeMembers} />
      <Sidebar
        me={me}
        status={chat.status}
        rooms={rooms}
        dms={dms}
        people={chat.people}
        findUsers={chat.findUsers}
        clearUsers={chat.clearUsers}
        onBrowseRooms={() => {
          setBrowsing(true);
          setNavOpen(false);
        }}
        active={active}
        unread={unread}
        mentions={mentions}
        onSelect={select}
        onJoin={join}
        onStartDm={startDm}
        onSignOut={signOut}
      />

      <main className="conversation" aria-label="Conversation">
        {room && (
          <>
            <RoomHeader
              name={room.name}
              summary={roomSummary(room, connected, roomInfo?.description)}
              onOpenNav={() => setNavOpen(true)}
              unread={totalUnread}
              members={members}
              isPrivate={room.private}
              inviting={inviting}
              onInvite={() => setInviting((x) => !x)}
              onLeave={() => leaveRoom(room.name)}
              extra={searchButton}
            />
            {inviting && (
              <InvitePopover
                room={room.name}
                people={chat.people}
                findUsers={chat.findUsers}
                clearUsers={chat.clearUsers}
                online={room.users}
                meId={me.userId}
                onInvite={(u) => {
                  chat.invite(room.name, u.userId);
                  setInviting(false);
                  push({ title: `${u.username} was invited to #${room.name}.`, tone: 'info' });
                }}
                onClose={() => setInviting(false)}
              />
            )}
            {banner}
            {conversationBody({
              conv: room,
              listKey: `r:${room.name}`,
              pending: chat.outbox.filter((p) => p.kind === 'message' && p.room === room.name),
              beginningText: `This is the very beginning of #${room.name}.`,
              placeholder: `Message #${room.name}`,
              onTyping: () => chat.typing(room.name),
              onSend: (text) => chat.sendMessage(room.name, text) !== null,
            })}
          </>
        )}

        {dm && (
          <>
            <DmHeader
              userId={dm.userId}
              username={chat.users[dm.userId]?.username ?? dm.username}
              online={dms.find((d) => d.userId === dm.userId)?.online ?? null}
              onOpenNav={() => setNavOpen(true)}
              unread={totalUnread}
              members={members}
              extra={searchButton}
            />
            {banner}
            {conversationBody({
              conv: dm,
              listKey: `d:${dm.userId}`,
              pending: chat.outbox.filter((p) => p.kind === 'dm' && p.to === dm.userId),
              beginningText: (
                <>
                  This is the beginning of your conversation with <bdi>{dm.username}</bdi>.
                </>
              ),
              placeholder: `Message ${dm.username}`,
              onTyping: () => chat.typingTo(dm.userId),
              onSend: (text) => chat.sendDm(dm.userId, text) !== null,
            })}
          </>
        )}

        {!room && !dm && (
          <div className="empty-state">
            {banner}
            <div className="empty-card">
              <h1>
                Welcome, <bdi>{me.username}</bdi>
              </h1>
              <p className="muted">Join a room from the sidebar, or create one by typing its name.</p>
            </div>
          </div>
        )}
      </main>

      <MembersPanel
        title={room ? `Online in #${room.name}` : 'Online now'}
        users={room ? room.users : online}
        total={membersTotal}
        unknownNote={connected ? 'Joining…' : 'Not connected: shown again once reconnected.'}
        meId={me.userId}
        open={membersOpen}
        onMessage={startDm}
        onRemove={
          room && (room.owner === session.userId || owned.includes(room.name))
            ? (user) => setToRemove({ room: room.name, user })
            : undefined
        }
      />

      {toRemove && (
        <ConfirmDialog
          title={`Remove ${toRemove.user.username} from #${toRemove.room}?`}
          confirmLabel="Remove"
          onCancel={() => setToRemove(null)}
          onConfirm={() => {
            chat.remove(toRemove.room, toRemove.user.userId);
            setToRemove(null);
          }}
        >
          <p className="muted">
            <bdi>{toRemove.user.username}</bdi> will no longer see #{toRemove.room} nor what is written there.
          </p>
        </ConfirmDialog>
      )}

      {browsing && (
        <RoomBrowser
          rooms={chat.rooms}
          mine={mine}
          connected={connected}
          onRefresh={chat.refreshRooms}
          onOpen={(name) => {
            setBrowsing(false);
            select({ kind: 'room', room: name });
          }}
          onJoin={(name) => {
            setBrowsing(false);
            join(name);
          }}
          onCreate={createRoom}
          onClose={closeBrowser}
        />
      )}

      {searchOpen && (
        <SearchPanel
          search={chat.search}
          meId={me.userId}
          nameOf={nameOf}
          onSearch={chat.searchMessages}
          onOpen={openResult}
          onClose={() => {
            setSearchOpen(false);
            chat.clearSearch();
          }}
        />
      )}

      {toDelete && (
        <ConfirmDialog
          title="Delete this message?"
          confirmLabel="Delete"
          onCancel={() => setToDelete(null)}
          onConfirm={() => {
            if (chat.deleteMessage(toDelete.id)) setToDelete(null);
          }}
        >
          <p className="muted">It will be removed for everyone. This cannot be undone.</p>
          <blockquote className="confirm-quote" dir="auto">
            {toDelete.content}
          </blockquote>
        </ConfirmDialog>
      )}

      <Toasts toasts={toasts} onDismiss={dismiss} />
    </div>
  );
}

/** Who else is typing in the room (names in their own direction, the line cut when too long). */
function TypingLine({ typing }: { typing: UserRef[] }) {
  return (
    <div className="typing-line" data-testid="typing" aria-live="polite">
      {typing.length > 0 && (
        <>
          <span className="typing-dots" aria-hidden="true">
            <i />
            <i />
            <i />
          </span>
          <span className="typing-text">
            {typing.length === 1 ? (
              <>
                <bdi>{typing[0].username}</bdi> is typing…
              </>
            ) : typing.length === 2 ? (
              <>
                <bdi>{typing[0].username}</bdi> and <bdi>{typing[1].username}</bdi> are typing…
              </>
            ) : (
              'Several people are typing…'
            )}
          </span>
        </>
      )}
    </div>
  );
}
