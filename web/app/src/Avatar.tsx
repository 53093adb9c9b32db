import { avatarColor, initials } from './format';

export function Avatar({ userId, name, size = 36, online }: { userId: number; name: string; size?: number; online?: boolean }) {
  return (
    <span className="avatar" style={{ width: size, height: size, background: avatarColor(userId), fontSize: size * 0.4 }} aria-hidden="true">
      {initials(name)}
      {online !== undefined && <span className={`presence-dot ${online ? 'is-online' : ''}`} />}
    </span>
  );
}
