/** Small DOM helpers. Server data is only ever set as text (never as HTML). */

/** The element with this id; throws if the page lacks it (a build error). */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`the console page has no element #${id}`);
  return el as T;
}

/** Sets an element's text only when it changed (cheap to call every tick). */
export function setText(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** Sets the text of the element with this id. */
export function text(id: string, value: string): void {
  setText(byId(id), value);
}

/** Keeps exactly `n` rows of `cols` cells in a table body, reusing the existing ones. */
export function rows(body: HTMLTableSectionElement, n: number, cols: number): HTMLTableRowElement[] {
  while (body.rows.length > n) body.deleteRow(-1);
  while (body.rows.length < n) {
    const tr = body.insertRow();
    for (let c = 0; c < cols; c++) tr.insertCell();
  }
  return Array.from(body.rows);
}
