/**
 * Finding people (PROTOCOL.md §11): `users` searches by the start of a name, answered in the
 * order asked (the answer does not repeat its query), the online ones first. Only the answer to
 * the latest search is shown (`people`); every answer tells who is online (`userOnline`).
 */
import { reduceUsers } from './memberReducers';
import type { UsersFrame } from './protocol';
import type { SendQueue } from './sendQueue';
import type { Store } from './store';

/** How many people a search shows (the server's default; its cap is 100). */
const USERS_LIMIT = 20;
/** The longest query the server takes (a name's longest). */
const USERS_QUERY_MAX_CHARS = 64;

export class Directory {
  /** the queries sent on this connection whose answers have not come, oldest first */
  private readonly waiting: string[] = [];

  constructor(
    private readonly store: Store,
    private readonly queue: SendQueue,
  ) {}

  /**
   * Looks for people whose name starts with `query` (empty: everyone). The answer replaces
   * `people.results`; until it comes they are null. Asked again on a new connection if it was lost.
   */
  findUsers = (query: string): void => {
    const q = [...query.trim()].slice(0, USERS_QUERY_MAX_CHARS).join('');
    this.store.set({ people: { query: q, results: null } });
    this.send(q);
  };

  /** Forgets the search (the picker closed). */
  clearUsers = (): void => {
    this.store.set({ people: null });
  };

  onUsers(frame: UsersFrame): void {
    const query = this.waiting.shift();
    this.store.update((s) => reduceUsers(s, frame, query));
  }

  /** Whether an error answers a `users` request of ours: it is taken off the queue (the search shows nothing). */
  refused(): void {
    const query = this.waiting.shift();
    const people = this.store.state.people;
    if (query !== undefined && people?.query === query && people.results === null) this.store.set({ people: { query, results: [] } });
  }

  /** The connection went away: its answers will not come. */
  reset(): void {
    this.waiting.length = 0;
  }

  /** A new connection: a search still waiting for its answer is asked again. */
  onWelcome(): void {
    const people = this.store.state.people;
    if (people && people.results === null) this.send(people.query);
  }

  private send(query: string): void {
    if (this.queue.send(query ? { type: 'users', query, limit: USERS_LIMIT } : { type: 'users', limit: USERS_LIMIT })) {
      this.waiting.push(query);
    }
  }
}
