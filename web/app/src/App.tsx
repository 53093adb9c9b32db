import { useCallback, useEffect, useState } from 'react';
import type { PendingMessage } from '@chat/use-chat';
import { ChatScreen } from './ChatScreen';
import { LoginScreen } from './LoginScreen';
import { loadSession, onSessionChangedElsewhere, saveSession, type Session } from './session';

/** Messages not yet delivered when the session expired: sent once the same user signs in again (in memory; a reload keeps them through sessionStorage, see loadUnsent). */
export interface Unsent {
  userId: number;
  outbox: PendingMessage[];
}

export function App() {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const [notice, setNotice] = useState<string | null>(null);
  const [unsent, setUnsent] = useState<Unsent | null>(null);
  const [initialOutbox, setInitialOutbox] = useState<PendingMessage[]>([]);

  const onSignedIn = useCallback(
    (s: Session) => {
      saveSession(s);
      setNotice(null);
      // Another user signing in never gets them.
      setInitialOutbox(unsent?.userId === s.userId ? unsent.outbox : []);
      setUnsent(null);
      setSession(s);
    },
    [unsent],
  );

  // Another tab signed out: so is this one. Another tab signed in as someone else: this
  // one follows, as a reload would. The same user again (a newer token) changes nothing:
  // this tab's connection stays as it is.
  useEffect(
    () =>
      onSessionChangedElsewhere((stored) => {
        setNotice(null);
        setSession((current) => (stored && current && stored.userId === current.userId ? current : stored));
      }),
    [],
  );

  const onSignedOut = useCallback((why?: string, left?: Unsent) => {
    saveSession(null);
    setNotice(why ?? null);
    setUnsent(left?.outbox.length ? left : null);
    setSession(null);
  }, []);

  if (!session) {
    const n = unsent?.outbox.length ?? 0;
    const full = notice && n ? `${notice} ${n === 1 ? 'Your unsent message' : `Your ${n} unsent messages`} will be sent once you are signed in.` : notice;
    return <LoginScreen onSignedIn={onSignedIn} notice={full} />;
  }
  return <ChatScreen key={session.token} session={session} initialOutbox={initialOutbox} onSignedOut={onSignedOut} />;
}
