// @vitest-environment jsdom
import { act, cleanup, renderHook, waitFor } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import { CHAT_ACTIONS, useChat, type WebSocketCtor } from '../src';
import { FakeChatServer } from './fakeServer';

let server: FakeChatServer;

beforeEach(async () => {
  server = new FakeChatServer();
  server.addUser(1, 'alice');
  server.addUser(2, 'bob');
  await server.start();
});

afterEach(async () => {
  cleanup();
  await server.kill();
});

const Ws = WebSocket as unknown as WebSocketCtor;

describe('useChat', () => {
  it('connects on mount, re-renders on frames, and closes with 1000 on unmount', async () => {
    const { result, unmount } = renderHook(() =>
      useChat({ url: server.url, WebSocket: Ws, getToken: async () => 'tok-alice', initialRooms: ['general'], tickMs: 50 }),
    );
    await waitFor(() => expect(result.current.status).toBe('open'));
    expect(result.current.me).toEqual({ userId: 1, username: 'alice' });
    await waitFor(() => expect(result.current.joined.general?.status).toBe('joined'));

    act(() => {
      result.current.sendMessage('general', 'from the hook');
    });
    expect(result.current.outbox).toHaveLength(1);
    await waitFor(() => expect(result.current.joined.general.messages.map((m) => m.content)).toEqual(['from the hook']));
    expect(result.current.outbox).toHaveLength(0);

    unmount();
    await waitFor(() => expect(server.clientCloseCodes).toEqual([1000]));
  });

  it('reads the latest getToken/onError without reconnecting when they change', async () => {
    const onError1 = vi.fn();
    const onError2 = vi.fn();
    const { result, rerender } = renderHook(
      ({ onError }) => useChat({ url: server.url, WebSocket: Ws, getToken: async () => 'tok-bob', onError, tickMs: 50 }),
      { initialProps: { onError: onError1 } },
    );
    await waitFor(() => expect(result.current.status).toBe('open'));
    rerender({ onError: onError2 });
    act(() => {
      result.current.join('bad name!');
    });
    expect(onError1).not.toHaveBeenCalled();
    expect(onError2).toHaveBeenCalledTimes(1);
    expect(server.connections).toBe(1);
  });

  it("hands out each of the client's actions, the same functions on every render", async () => {
    const { result, rerender } = renderHook(() =>
      useChat({ url: server.url, WebSocket: Ws, getToken: async () => 'tok-alice', initialRooms: ['general'], tickMs: 50 }),
    );
    const first = result.current;
    for (const name of CHAT_ACTIONS) expect(first[name]).toBe(first.client[name]);
    await waitFor(() => expect(result.current.status).toBe('open'));
    rerender();
    for (const name of CHAT_ACTIONS) expect(result.current[name]).toBe(first[name]);
  });

  it('stays idle while disabled', async () => {
    const getToken = vi.fn(async () => 'tok-alice');
    const { result, rerender } = renderHook(
      ({ enabled }) => useChat({ url: server.url, WebSocket: Ws, getToken, enabled, tickMs: 50 }),
      { initialProps: { enabled: false } },
    );
    expect(result.current.status).toBe('idle');
    expect(getToken).not.toHaveBeenCalled();
    rerender({ enabled: true });
    await waitFor(() => expect(result.current.status).toBe('open'));
  });
});
