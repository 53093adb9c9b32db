export { useChat, type UseChatOptions, type UseChatResult } from './useChat';
export {
  ChatClient,
  isRetryable,
  jwtExpiresAt,
  mergeById,
  CLOSE_CLIENT_TIMEOUT,
  CLOSE_UNAUTHORIZED,
  type ChatClientOptions,
  type ChatError,
  type ChatState,
  type ConnectionStatus,
  type DmState,
  type PendingMessage,
  type RoomState,
  type TokenContext,
  type WebSocketCtor,
  type WebSocketLike,
} from './client';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
export * from './protocol';
