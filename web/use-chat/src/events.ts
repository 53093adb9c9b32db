/**
 * Wire types of protocol v2 §9–§11 and DM typing: read state, edits, deletes, reactions, search.
 *
 * Kept apart from protocol.ts (the v1 frames) so that each part of the protocol reads on its own;
 * `parseServerFrame` hands the frame types listed here to `parseEventFrame`.
 */
import type { DirectMessage, MessageId, RoomMessage, UserId, UserRef } from './protocol';

/** Read state of a room or conversation (§9): up to which id it was read, what is unread after it. */
export interface ReadCounts {
  lastReadId: MessageId;
  unread: number;
  mentions: number;
  /**
   * In `read` frames (an extension): the newest message id the counts include, also when that
   * message has not reached this client yet. Absent from older servers.
   */
  countedUpTo?: MessageId;
}

// ----- client -> server -----------------------------------------------------

export type ReadFrame = { type: 'read'; id: MessageId; room: string } | { type: 'read'; id: MessageId; with: UserId };
export interface EditFrame {
  type: 'edit';
  id: MessageId;
  content: string;
}
export interface DeleteFrame {
  type: 'delete';
  id: MessageId;
}
export interface ReactFrame {
  type: 'react' | 'unreact';
  id: MessageId;
  emoji: string;
}
export interface SearchRequestFrame {
  type: 'search';
  query: string;
  room?: string;
  with?: UserId;
  before?: MessageId;
  limit?: number;
}
/** Typing in a DM conversation: told to user `to`. */
export interface DmTypingFrame {
  type: 'typing';
  to: UserId;
}

export type EventClientFrame = ReadFrame | EditFrame | DeleteFrame | ReactFrame | SearchRequestFrame | DmTypingFrame;

// ----- server -> client -----------------------------------------------------

/** `read`: the read state of one of my rooms or conversations moved (on any of my devices). */
export type ReadEventFrame = { type: 'read'; data: ReadCounts } & ({ room: string } | { with: UserId });
export interface MessageEditedFrame {
  type: 'message_edited';
  eventId: MessageId;
  data: RoomMessage | DirectMessage;
}
export interface MessageDeletedFrame {
  type: 'message_deleted';
  eventId: MessageId;
  /** `room` for a room message, `to` for a DM */
  data: { id: MessageId; fromUser: UserId; room?: string; to?: UserId };
}
export interface ReactionFrame {
  type: 'reaction';
  eventId: MessageId;
  data: { id: MessageId; emoji: string; userId: UserId; username: string; on: boolean };
}
export interface SearchFrame {
  type: 'search';
  query: string;
  data: Array<RoomMessage | DirectMessage>;
}
/** Someone typing to me in our DM conversation (`with`: who). */
export interface DmTypingEventFrame {
  type: 'typing';
  with: UserId;
  data: UserRef;
}

/** The §10 frames that change a message (live, in a room's replay, in a DM catch-up's `events`). */
export type MessageEventFrame = MessageEditedFrame | MessageDeletedFrame | ReactionFrame;

export type EventServerFrame = ReadEventFrame | MessageEditedFrame | MessageDeletedFrame | ReactionFrame | SearchFrame;

export const EVENT_SERVER_TYPES: ReadonlySet<string> = new Set<EventServerFrame['type']>([
  'read',
  'message_edited',
  'message_deleted',
  'reaction',
  'search',
]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function isMessageData(v: unknown): v is RoomMessage | DirectMessage {
  return isObject(v) && isId(v.id) && isId(v.fromUser) && typeof v.content === 'string' && (typeof v.room === 'string' || isId(v.to));
}

/** The read state of a `welcome` / `conversations` / `read` entry; null when it carries none (older servers). */
export function readCountsOf(v: unknown): ReadCounts | null {
  if (!isObject(v) || !isId(v.lastReadId)) return null;
  return {
    lastReadId: v.lastReadId,
    unread: isId(v.unread) && v.unread >= 0 ? v.unread : 0,
    mentions: isId(v.mentions) && v.mentions >= 0 ? v.mentions : 0,
    ...(isId(v.countedUpTo) && v.countedUpTo >= 0 ? { countedUpTo: v.countedUpTo } : {}),
  };
}

/** The well-formed §10 frames of a DM catch-up's `events` (anything else is left out). */
export function parseMessageEvents(v: unknown): MessageEventFrame[] {
  if (!Array.isArray(v)) return [];
  const frames = v.filter(isObject).map(parseEventFrame);
  return frames.filter((f): f is MessageEventFrame => f?.type === 'message_edited' || f?.type === 'message_deleted' || f?.type === 'reaction');
}

/** Parses a frame of one of `EVENT_SERVER_TYPES` (already JSON); null when malformed. */
export function parseEventFrame(v: Record<string, unknown>): EventServerFrame | null {
  const d = v.data;
  switch (v.type) {
    case 'read': {
      const counts = readCountsOf(d);
      if (!counts) return null;
      if (typeof v.room === 'string') return { type: 'read', room: v.room, data: counts };
      if (isId(v.with)) return { type: 'read', with: v.with, data: counts };
      return null;
    }
    case 'message_edited':
      return isId(v.eventId) && isMessageData(d) ? (v as unknown as MessageEditedFrame) : null;
    case 'message_deleted':
      return isId(v.eventId) && isObject(d) && isId(d.id) && (typeof d.room === 'string' || isId(d.to))
        ? (v as unknown as MessageDeletedFrame)
        : null;
    case 'reaction':
      return isId(v.eventId) && isObject(d) && isId(d.id) && typeof d.emoji === 'string' && isId(d.userId) && typeof d.on === 'boolean'
        ? (v as unknown as ReactionFrame)
        : null;
    case 'search':
      return typeof v.query === 'string' && Array.isArray(d) ? { type: 'search', query: v.query, data: d.filter(isMessageData) } : null;
  }
  return null;
}
