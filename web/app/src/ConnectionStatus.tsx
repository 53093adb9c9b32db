import { useEffect, useState } from 'react';
import type { ConnectionStatus as Status } from '@chat/use-chat';

const LABEL: Record<Status, string> = {
  idle: 'Offline',
  connecting: 'Connecting…',
  open: 'Connected',
  reconnecting: 'Reconnecting…',
  unauthorized: 'Signed out',
  closed: 'Disconnected',
};

/**
 * Whole seconds left until `at`, counted from the time of each render: a clock kept in state would
 * still hold the time of an earlier render when a new `at` comes (the banner stays mounted), and
 * show the seconds since then until its next tick. The timer only makes it render again.
 */
function useSecondsUntil(at: number | null): number | null {
  const [, setTicks] = useState(0);
  useEffect(() => {
    if (at === null) return;
    const t = setInterval(() => setTicks((n) => n + 1), 250);
    return () => clearInterval(t);
  }, [at]);
  return at === null ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Small status pill for the sidebar. */
export function ConnectionPill({ status }: { status: Status }) {
  return (
    <span className={`conn-pill conn-${status}`} data-testid="conn-status" data-status={status} role="status">
      <span className="conn-dot" aria-hidden="true" />
      {LABEL[status]}
    </span>
  );
}

/** Banner over the conversation while the connection is not usable. */
export function ConnectionBanner({
  status,
  nextRetryAt,
  queued,
  onRetry,
}: {
  status: Status;
  nextRetryAt: number | null;
  queued: number;
  onRetry: () => void;
}) {
  const secs = useSecondsUntil(status === 'reconnecting' ? nextRetryAt : null);
  if (status === 'open' || status === 'idle') return null;
  let text: string;
  if (status === 'connecting') text = 'Connecting to the chat server…';
  else if (status === 'reconnecting')
    text = secs && secs > 0 ? `Connection lost. Reconnecting in ${secs}s…` : 'Connection lost. Reconnecting…';
  else text = 'You are disconnected.';
  return (
    <div className={`banner banner-${status}`} role="status" data-testid="conn-banner">
      <span className="banner-spinner" aria-hidden="true" />
      <span>
        {text}
        {queued > 0 && ` ${queued} message${queued > 1 ? 's' : ''} will be sent when you're back.`}
      </span>
      {status === 'reconnecting' && (
        <button className="btn btn-ghost btn-sm" onClick={onRetry}>
          Retry now
        </button>
      )}
    </div>
  );
}
