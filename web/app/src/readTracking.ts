import { useEffect, useState } from 'react';

/** Whether the window has the focus and the page is visible: only then has the user seen new messages. */
export function useWindowFocused(): boolean {
  const [focused, setFocused] = useState(() => document.hasFocus() && document.visibilityState === 'visible');
  useEffect(() => {
    const update = () => setFocused(document.hasFocus() && document.visibilityState === 'visible');
    window.addEventListener('focus', update);
    window.addEventListener('blur', update);
    document.addEventListener('visibilitychange', update);
    return () => {
      window.removeEventListener('focus', update);
      window.removeEventListener('blur', update);
      document.removeEventListener('visibilitychange', update);
    };
  }, []);
  return focused;
}

/** The tab's title with the unread count in front, `(3) Chat`, so that it shows in the tab bar. */
export function useUnreadTitle(unread: number, base = 'Chat'): void {
  useEffect(() => {
    document.title = unread > 0 ? `(${unread}) ${base}` : base;
  }, [unread, base]);
}
