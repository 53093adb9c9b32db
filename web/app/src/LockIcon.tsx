/** A padlock: a private room (drawn, not an emoji: not every system has an emoji font). */
export function LockIcon({ size = 12 }: { size?: number }) {
  return (
    <svg className="lock-icon" viewBox="0 0 16 16" width={size} height={size} aria-hidden="true" fill="currentColor">
      <path d="M4.5 7V5a3.5 3.5 0 1 1 7 0v2h.5A1 1 0 0 1 13 8v6a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V8a1 1 0 0 1 1-1zm1.5 0h4V5a2 2 0 1 0-4 0z" />
    </svg>
  );
}
