/** A tiny DOM helper: h('button.primary', { onclick }, 'Start'). Text is always text, never HTML. */
type Child = Node | string | number | null | undefined | false;
type Props = Record<string, unknown> & { dataset?: Record<string, string> };

export function h<K extends keyof HTMLElementTagNameMap>(spec: K | `${K}.${string}` | `${K}#${string}`, props: Props = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  // tag, then .class and #id parts in any order ('table.list#alarms' as 'table#alarms.list').
  const [tag = 'div', ...parts] = spec.split(/(?=[.#])/);
  const classes = parts.filter((part) => part.startsWith('.')).map((part) => part.slice(1));
  const id = parts.find((part) => part.startsWith('#'))?.slice(1);
  const element = document.createElement(tag as K);
  if (id) element.id = id;
  if (classes.length > 0) element.className = classes.join(' ');
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === false || value === null) continue;
    if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value as EventListener);
    else if (name === 'class') element.className += ` ${String(value)}`;
    else if (name in element && typeof value !== 'string') (element as unknown as Record<string, unknown>)[name] = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function clear(element: Element, ...children: (Node | string)[]): void {
  element.replaceChildren(...children);
}

const drawnFrom = new WeakMap<Element, string>();

/**
 * Draws `element` again only when what it shows changed (`shown`, a text of it): a part redrawn on
 * every live change (stats arrive several times a second) replaced its links and buttons under
 * the pointer, and clicks were lost.
 */
export function redraw(element: Element, shown: string, draw: () => (Node | string)[]): void {
  if (drawnFrom.get(element) === shown) return;
  drawnFrom.set(element, shown);
  element.replaceChildren(...draw());
}

export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let scaled = value;
  let unit = 0;
  while (Math.abs(scaled) >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
