import { useEffect, useRef, useState } from 'react';

/** The emoji offered by the reaction picker: a handful of common ones. */
export const QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

/** Who reacted with what under a message: one chip per emoji, its count, the names on hover; mine toggles. */
export function ReactionChips({
  reactions,
  meId,
  nameOf,
  onToggle,
}: {
  reactions: Record<string, number[]>;
  meId: number;
  nameOf: (userId: number) => string;
  onToggle: (emoji: string, on: boolean) => void;
}) {
  return (
    <div className="reactions" data-testid="reactions">
      {Object.entries(reactions).map(([emoji, who]) => {
        const mine = who.includes(meId);
        const names = who.map((u) => (u === meId ? 'you' : nameOf(u))).join(', ');
        return (
          <button
            key={emoji}
            type="button"
            className={`reaction-chip ${mine ? 'is-mine' : ''}`}
            aria-pressed={mine}
            title={`${names} reacted with ${emoji}`}
            aria-label={`${emoji} ${who.length}: ${names}`}
            data-testid="reaction-chip"
            data-emoji={emoji}
            data-who={names}
            onClick={() => onToggle(emoji, !mine)}
          >
            <span aria-hidden="true">{emoji}</span> <span className="reaction-count">{who.length}</span>
          </button>
        );
      })}
    </div>
  );
}

/** A button opening a small palette of `QUICK_EMOJI`; picking one reacts (or takes my reaction back). */
export function ReactionPicker({ mine, onPick }: { mine: (emoji: string) => boolean; onPick: (emoji: string, on: boolean) => void }) {
  const [open, setOpen] = useState(false);
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!open) return;
    const close = (e: MouseEvent | KeyboardEvent) => {
      if (e instanceof KeyboardEvent ? e.key === 'Escape' : !box.current?.contains(e.target as Node)) setOpen(false);
    };
    document.addEventListener('mousedown', close);
    document.addEventListener('keydown', close);
    return () => {
      document.removeEventListener('mousedown', close);
      document.removeEventListener('keydown', close);
    };
  }, [open]);
  return (
    <div className="reaction-picker" ref={box}>
      <button
        type="button"
        className="msg-action"
        aria-label="Add a reaction"
        title="Add a reaction"
        aria-expanded={open}
        onClick={() => setOpen((o) => !o)}
        data-testid="react-button"
      >
        ☺+
      </button>
      {open && (
        <div className="emoji-palette" role="menu" data-testid="emoji-palette">
          {QUICK_EMOJI.map((e) => (
            <button
              key={e}
              type="button"
              role="menuitem"
              className={`emoji-option ${mine(e) ? 'is-mine' : ''}`}
              aria-label={`React with ${e}`}
              data-testid="emoji-option"
              data-emoji={e}
              onClick={() => {
                setOpen(false);
                onPick(e, !mine(e));
              }}
            >
              {e}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
