import { useRef, useState, type KeyboardEvent } from 'react';
import { isBlank, MAX_CONTENT_LENGTH } from '@chat/use-chat';

interface Props {
  placeholder: string;
  /** the draft of this conversation, written earlier and not sent */
  initialText: string;
  /** every change of the text (also '' once sent), to keep it as the conversation's draft */
  onTextChange: (text: string) => void;
  onSend: (text: string) => boolean;
  onTyping?: () => void;
  /** Up on an empty composer: edit my last message; true when there was one */
  onEditLast?: () => boolean;
  offline: boolean;
}

export function Composer({ placeholder, initialText, onTextChange, onSend, onTyping, onEditLast, offline }: Props) {
  const [text, setText] = useState(initialText);
  const ref = useRef<HTMLTextAreaElement>(null);
  const length = [...text].length;
  const tooLong = length > MAX_CONTENT_LENGTH;
  // Blank as the server counts it: whitespace and invisible characters (a zero-width space…).
  const blank = isBlank(text);

  function submit() {
    if (blank || tooLong) return;
    if (onSend(text)) {
      setText('');
      onTextChange('');
      requestAnimationFrame(() => ref.current?.focus());
    }
  }

  function onKeyDown(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === 'ArrowUp' && text === '' && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && onEditLast?.()) {
      e.preventDefault();
    }
  }

  return (
    <form
      className="composer"
      data-testid="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <div className={`composer-box ${tooLong ? 'has-error' : ''}`}>
        <textarea
          ref={ref}
          rows={1}
          value={text}
          placeholder={placeholder}
          aria-label={placeholder}
          dir="auto"
          onChange={(e) => {
            setText(e.target.value);
            onTextChange(e.target.value);
            if (!isBlank(e.target.value)) onTyping?.();
          }}
          onKeyDown={onKeyDown}
        />
        <button type="submit" className="btn btn-primary send-btn" disabled={blank || tooLong} aria-label="Send">
          <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
            <path d="M3 20.5 21 12 3 3.5v6.6l12 1.9-12 1.9z" fill="currentColor" />
          </svg>
        </button>
      </div>
      <div className="composer-hint">
        {offline ? (
          <span className="warn">Offline — what you send now is delivered when the connection is back.</span>
        ) : (
          <span>
            <kbd>Enter</kbd> to send · <kbd>Shift</kbd>+<kbd>Enter</kbd> for a new line
          </span>
        )}
        {length > MAX_CONTENT_LENGTH - 500 && (
          <span className={tooLong ? 'error' : ''}>
            {length}/{MAX_CONTENT_LENGTH}
          </span>
        )}
      </div>
    </form>
  );
}
