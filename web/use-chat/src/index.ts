export { useChat, type UseChatOptions, type UseChatResult } from './useChat';
export { ChatClient, isRetryable, jwtExpiresAt, CLOSE_CLIENT_TIMEOUT, CLOSE_UNAUTHORIZED } from './client';
export type {
  ChatClientOptions,
  ChatError,
  ChatState,
  ConnectionStatus,
  DmState,
  PendingMessage,
  RoomState,
  TokenContext,
  WebSocketCtor,
  WebSocketLike,
} from './state';
export { mergeById } from './messageLists';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
export * from './protocol';
