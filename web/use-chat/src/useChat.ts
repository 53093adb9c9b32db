/**
 * `useChat`: the React binding of ChatClient. The snapshot comes through `useSyncExternalStore`;
 * the client's actions (`CHAT_ACTIONS`, listed once in client.ts) are handed out next to it.
 */
import { useEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import { CHAT_ACTIONS, ChatClient, type ChatActions } from './client';
import type { ChatClientOptions, ChatState } from './state';

export interface UseChatOptions extends ChatClientOptions {
  /** false keeps the client idle (e.g. while signed out). Default true. */
  enabled?: boolean;
}

export type UseChatResult = ChatState &
  ChatActions & {
    /** the underlying client, for advanced use */
    client: ChatClient;
  };

/**
 * Connects while mounted (and `enabled`), disconnects with code 1000 on unmount. A new client is
 * made when `url` or `WebSocket` change; the other options are read through a ref, so inline
 * callbacks (getToken, onError…) do not reconnect.
 */
export function useChat(options: UseChatOptions): UseChatResult {
  const latest = useRef(options);
  useEffect(() => {
    latest.current = options;
  });

  const { url, WebSocket: WsImpl, enabled = true } = options;
  const client = useMemo(
    () =>
      new ChatClient({
        ...latest.current,
        url,
        WebSocket: WsImpl,
        getToken: (ctx) => latest.current.getToken(ctx),
        onError: (e) => latest.current.onError?.(e),
        onMessage: (m) => latest.current.onMessage?.(m),
        onDm: (m) => latest.current.onDm?.(m),
      }),
    [url, WsImpl],
  );
  // The actions are the client's own (stable) functions: made once per client.
  const actions = useMemo(
    () => Object.fromEntries(CHAT_ACTIONS.map((name) => [name, client[name]])) as ChatActions,
    [client],
  );

  useEffect(() => {
    if (!enabled) return;
    client.start();
    return () => client.stop();
  }, [client, enabled]);

  const state = useSyncExternalStore(client.subscribe, client.getState, client.getState);

  return useMemo(() => ({ ...state, ...actions, client }), [state, actions, client]);
}
