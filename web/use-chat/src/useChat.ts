import { useEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import { ChatClient } from './client';
import type { ChatClientOptions, ChatState } from './state';

export interface UseChatOptions extends ChatClientOptions {
  /** false keeps the client idle (e.g. while signed out). Default true. */
  enabled?: boolean;
}

export type UseChatResult = ChatState &
  Pick<
    ChatClient,
    | 'join'
    | 'leave'
    | 'sendMessage'
    | 'sendDm'
    | 'loadOlder'
    | 'openDm'
    | 'addDm'
    | 'loadOlderDms'
    | 'setReadingBack'
    | 'setReadingBackDm'
    | 'typing'
    | 'refreshRooms'
    | 'retry'
    | 'discard'
    | 'dismissError'
    | 'reconnectNow'
    | 'stop'
    | 'start'
  > & {
    /** the underlying client, for advanced use */
    client: ChatClient;
  };

/**
 * React binding of ChatClient: connects while mounted (and `enabled`), disconnects with code 1000
 * on unmount. A new client is made when `url` or `WebSocket` change; the other options are read
 * through a ref, so inline callbacks (getToken, onError…) do not reconnect.
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

  useEffect(() => {
    if (!enabled) return;
    client.start();
    return () => client.stop();
  }, [client, enabled]);

  const state = useSyncExternalStore(client.subscribe, client.getState, client.getState);

  return useMemo(
    () => ({
      ...state,
      client,
      join: client.join,
      leave: client.leave,
      sendMessage: client.sendMessage,
      sendDm: client.sendDm,
      loadOlder: client.loadOlder,
      openDm: client.openDm,
      addDm: client.addDm,
      loadOlderDms: client.loadOlderDms,
      setReadingBack: client.setReadingBack,
      setReadingBackDm: client.setReadingBackDm,
      typing: client.typing,
      refreshRooms: client.refreshRooms,
      retry: client.retry,
      discard: client.discard,
      dismissError: client.dismissError,
      reconnectNow: client.reconnectNow,
      stop: client.stop,
      start: client.start,
    }),
    [state, client],
  );
}
