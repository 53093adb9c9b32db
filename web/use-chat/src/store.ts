/**
 * The client's state snapshot and its subscribers: every change replaces the snapshot and tells
 * them (what `useSyncExternalStore` needs), and errors shown to the user are added here.
 */
import type { ErrorAbout, ErrorCode } from './protocol';
import type { ResolvedOptions } from './options';
import type { ChatError, ChatState } from './state';

export class Store {
  private current: ChatState;
  private readonly listeners = new Set<() => void>();
  private errorSeq = 0;

  constructor(
    initial: ChatState,
    private readonly opts: Pick<ResolvedOptions, 'now' | 'maxErrors' | 'onError'>,
  ) {
    this.current = initial;
  }

  get state(): ChatState {
    return this.current;
  }

  getState = (): ChatState => this.current;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  /** Replaces the snapshot with `next` and tells the subscribers; nothing when it is the same snapshot. */
  replace(next: ChatState): void {
    if (next === this.current) return;
    this.current = next;
    for (const l of [...this.listeners]) l();
  }

  set(patch: Partial<ChatState>): void {
    this.replace({ ...this.current, ...patch });
  }

  /** Applies a pure update `(state) -> state`. */
  update(fn: (s: ChatState) => ChatState): void {
    this.replace(fn(this.current));
  }

  /** Shows an error (the latest `maxErrors` are kept) and hands it to `onError`. */
  pushError(code: ErrorCode, message: string, about: ErrorAbout = {}): ChatError {
    const err: ChatError = { id: ++this.errorSeq, code, message, at: this.opts.now(), ...about };
    this.set({ errors: [...this.current.errors, err].slice(-this.opts.maxErrors) });
    try {
      this.opts.onError?.(err);
    } catch {
      /* a throwing callback must not break the client */
    }
    return err;
  }
}
