import { useCallback, useEffect, useRef, useState } from 'react';

export interface Toast {
  id: number;
  title: string;
  detail?: string;
  tone: 'error' | 'info';
}

export function useToasts(ttlMs = 6000) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const seq = useRef(0);
  const timers = useRef(new Map<number, ReturnType<typeof setTimeout>>());

  const dismiss = useCallback((id: number) => {
    setToasts((t) => t.filter((x) => x.id !== id));
    const timer = timers.current.get(id);
    if (timer) clearTimeout(timer);
    timers.current.delete(id);
  }, []);

  const push = useCallback(
    (t: Omit<Toast, 'id'>) => {
      const id = ++seq.current;
      setToasts((all) => {
        // The same problem repeated (e.g. rate limiting) shows once.
        const rest = all.filter((x) => !(x.title === t.title && x.detail === t.detail));
        return [...rest, { ...t, id }].slice(-4);
      });
      timers.current.set(id, setTimeout(() => dismiss(id), ttlMs));
    },
    [dismiss, ttlMs],
  );

  useEffect(() => {
    const all = timers.current;
    return () => all.forEach((t) => clearTimeout(t));
  }, []);

  return { toasts, push, dismiss };
}

export function Toasts({ toasts, onDismiss }: { toasts: Toast[]; onDismiss: (id: number) => void }) {
  return (
    <div className="toasts" aria-live="assertive">
      {toasts.map((t) => (
        <div key={t.id} className={`toast toast-${t.tone}`} role="alert" data-testid="toast">
          <div className="toast-body">
            <strong>{t.title}</strong>
            {t.detail && <span>{t.detail}</span>}
          </div>
          <button className="icon-btn" aria-label="Dismiss" onClick={() => onDismiss(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
