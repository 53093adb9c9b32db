import { memo, useMemo, type ReactNode } from 'react';
import { parseMessage, type MarkupNode } from './parse';

/**
 * A message's text with its markup (see parse.ts) as React elements: text stays text, so no HTML
 * in a message is ever interpreted. Links open in a new tab without handing it this page.
 */
export const Markup = memo(function Markup({ content, username }: { content: string; username: string | null }) {
  const nodes = useMemo(() => parseMessage(content, username), [content, username]);
  return <>{render(nodes)}</>;
});

function render(nodes: MarkupNode[]): ReactNode[] {
  return nodes.map((n, i) => {
    switch (n.type) {
      case 'text':
        return n.text;
      case 'code':
        return (
          <code key={i} className="md-code">
            {n.text}
          </code>
        );
      case 'codeblock':
        return (
          <pre key={i} className="md-codeblock" data-lang={n.lang ?? undefined}>
            <code>{n.text}</code>
          </pre>
        );
      case 'strong':
        return <strong key={i}>{render(n.children)}</strong>;
      case 'em':
        return <em key={i}>{render(n.children)}</em>;
      case 'link':
        return (
          <a key={i} href={n.href} target="_blank" rel="noopener noreferrer" className="md-link">
            {n.text}
          </a>
        );
      case 'mention':
        return (
          <span key={i} className={`mention mention-${n.kind}`} data-testid="mention" data-mention={n.kind}>
            {n.text}
          </span>
        );
    }
  });
}
