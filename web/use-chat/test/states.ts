/**
 * What the reducer tests share: alice's state on an open connection, for each test file to put
 * its rooms, conversations and users into. The reducers are pure, so these tests build states
 * directly rather than through the fake server (see harness.ts for the tests that use one).
 */
import type { ChatState } from '../src/state';
import { ALICE } from './harness';

/** Alice's client on an open connection, nothing joined, loaded, pending or searched yet; then `patch`. */
export function openState(patch: Partial<ChatState> = {}): ChatState {
  return {
    status: 'open',
    me: ALICE,
    attempt: 0,
    nextRetryAt: null,
    lastCloseCode: null,
    rooms: [],
    joined: {},
    dms: {},
    users: { [ALICE.userId]: ALICE },
    userOnline: {},
    people: null,
    outbox: [],
    errors: [],
    reads: {},
    search: null,
    ...patch,
  };
}
