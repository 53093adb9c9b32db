import { useCallback, useState } from 'react';
import { ChatScreen } from './ChatScreen';
import { LoginScreen } from './LoginScreen';
import { loadSession, saveSession, type Session } from './session';

export function App() {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const [notice, setNotice] = useState<string | null>(null);

  const onSignedIn = useCallback((s: Session) => {
    saveSession(s);
    setNotice(null);
    setSession(s);
  }, []);

  const onSignedOut = useCallback((why?: string) => {
    saveSession(null);
    setNotice(why ?? null);
    setSession(null);
  }, []);

  if (!session) return <LoginScreen onSignedIn={onSignedIn} notice={notice} />;
  return <ChatScreen key={session.token} session={session} onSignedOut={onSignedOut} />;
}
