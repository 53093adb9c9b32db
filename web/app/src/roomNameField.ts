import { useState, type ChangeEvent } from 'react';
import { isValidRoomName } from '@chat/use-chat';

/** Why a typed room name is refused: the server's rule for names, in words. */
const ROOM_NAME_RULE = 'Use 1–64 letters, digits, “-”, “_” or “.”';

/** A field where the name of a room is typed: joining one in the sidebar, creating one in the room browser. */
export interface RoomNameField {
  /** what is typed, as typed */
  text: string;
  /** the room it names: spaces around and a leading '#' left out */
  name: string;
  /** shown under the field; null: none */
  error: string | null;
  setError: (error: string | null) => void;
  /** the input's handler: the error goes with any edit, since it was about the name before */
  onChange: (e: ChangeEvent<HTMLInputElement>) => void;
  /** `name` if the server would accept it; otherwise null, and `error` says why */
  validName: () => string | null;
  /** empties the field once its name was used */
  clear: () => void;
}

/** The state of a room-name field, so that both places parse, check and explain names alike. */
export function useRoomNameField(): RoomNameField {
  const [text, setText] = useState('');
  const [error, setError] = useState<string | null>(null);
  const name = text.trim().replace(/^#/, '');
  return {
    text,
    name,
    error,
    setError,
    onChange: (e) => {
      setText(e.target.value);
      setError(null);
    },
    validName: () => {
      if (isValidRoomName(name)) return name;
      setError(ROOM_NAME_RULE);
      return null;
    },
    clear: () => {
      setText('');
      setError(null);
    },
  };
}
