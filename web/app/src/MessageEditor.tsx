import { useEffect, useRef, useState, type KeyboardEvent } from 'react';
import { isBlank, MAX_CONTENT_LENGTH } from '@chat/use-chat';

/** A message of mine being edited in place: Enter saves, Shift+Enter adds a line, Escape cancels. */
export function MessageEditor({ initial, onSave, onCancel }: { initial: string; onSave: (text: string) => void; onCancel: () => void }) {
  const [text, setText] = useState(initial);
  const ref = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.focus();
    el.setSelectionRange(el.value.length, el.value.length);
  }, []);
  const invalid = isBlank(text) || [...text].length > MAX_CONTENT_LENGTH;
  const save = () => {
    if (invalid) return;
    if (text === initial) onCancel();
    else onSave(text);
  };
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      save();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      onCancel();
    }
  };
  return (
    <div className="message-editor">
      <textarea
        ref={ref}
        value={text}
        dir="auto"
        aria-label="Edit message"
        data-testid="edit-input"
        onChange={(e) => setText(e.target.value)}
        onKeyDown={onKeyDown}
      />
      <div className="message-editor-actions small muted">
        <kbd>Esc</kbd> to cancel · <kbd>Enter</kbd> to save
        <button type="button" className="btn btn-ghost btn-sm" onClick={onCancel} data-testid="edit-cancel">
          Cancel
        </button>
        <button type="button" className="btn btn-primary btn-sm" onClick={save} disabled={invalid} data-testid="edit-save">
          Save
        </button>
      </div>
    </div>
  );
}
