export { useChat, type UseChatOptions, type UseChatResult } from './useChat';
export { ChatClient, CHAT_ACTIONS, isRetryable, jwtExpiresAt, CLOSE_CLIENT_TIMEOUT, CLOSE_UNAUTHORIZED, type ChatActions } from './client';
export { dmKey, keyOfPending, parseKey, roomKey, type ConversationRef } from './conversation';
export type { CreateRoomOptions } from './membership';
export { loadUnsent, saveUnsent, type UnsentStorage } from './outbox';
export type {
  ChatClientOptions,
  ChatError,
  ChatState,
  ConnectionStatus,
  Conversation,
  ConversationKey,
  ConversationState,
  DmState,
  MembershipEvent,
  PendingMessage,
  ReadMark,
  SearchState,
  RoomState,
  TokenContext,
  WebSocketCtor,
  WebSocketLike,
} from './state';
export { mergeById } from './messageLists';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
export * from './protocol';
export { mentionKind, mentionPattern, mentionsUser, ROOM_MENTION } from './mentions';
export { indexOfId, withReaction } from './eventReducers';
