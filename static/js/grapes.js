// The grape bunch: `size` grapes in rows like a real bunch (a wide shoulder tapering to a tip),
// drawn as SVG circles. Grapes fill in reading order: attached first, then the granted ones
// waiting to be attached, then empty ones.
//
// The drawing is decoration (hidden from assistive technology; the count beside it says the
// same in words). A child's waiting grapes are real `<button>`s laid over their circles, each
// named "포도알 붙이기" with the number waiting, so that they can be reached and pressed without
// seeing or pointing.
import { h, s } from './dom.js';

const R = 20;
const DX = 2 * R + 3;
const DY = Math.round(DX * 0.87);

/** Row widths: k, k+1, k, k-1, ... 1 for the smallest k that holds `size`, cut at `size`. */
export function rowWidths(size) {
  for (let k = 1; ; k += 1) {
    const rows = [k, k + 1];
    for (let w = k; w >= 1; w -= 1) rows.push(w);
    let total = rows.reduce((a, b) => a + b, 0);
    if (total < size) continue;
    while (rows.length > 1 && total - rows[rows.length - 1] >= size) total -= rows.pop();
    rows[rows.length - 1] -= total - size;
    return rows;
  }
}

export function grapeBunch(board, { onPendingTap } = {}) {
  const rows = rowWidths(board.size);
  const widest = Math.max(...rows);
  const width = widest * DX + 20;
  const top = 62;
  const height = top + (rows.length - 1) * DY + R + 6;
  const cx0 = width / 2;

  const svg = s('svg', {
    class: 'bunch',
    viewBox: `0 0 ${width} ${height}`,
    'aria-hidden': 'true',
    focusable: 'false',
  });
  const wrap = h('div', { class: 'bunch-wrap' }, svg);
  const label = `포도알 붙이기 (붙일 포도알 ${board.unattached}개)`;
  let firstButton = true;
  svg.append(
    s('defs', {},
      s('radialGradient', { id: 'grape-fill', cx: '35%', cy: '30%', r: '75%' },
        s('stop', { offset: '0%', 'stop-color': '#b27ee6' }),
        s('stop', { offset: '55%', 'stop-color': '#7a3fbf' }),
        s('stop', { offset: '100%', 'stop-color': '#4d1f86' })),
      s('linearGradient', { id: 'leaf-fill', x1: '0', y1: '0', x2: '1', y2: '1' },
        s('stop', { offset: '0%', 'stop-color': '#8fd07a' }),
        s('stop', { offset: '100%', 'stop-color': '#4f9a45' }))),
    // Stem and leaf above the bunch.
    s('path', { class: 'stem', d: `M ${cx0} ${top - R + 4} C ${cx0 - 2} ${top - 30}, ${cx0 + 6} ${top - 44}, ${cx0 + 14} ${top - 54}` }),
    s('path', { class: 'leaf', d: `M ${cx0 + 4} ${top - 34} C ${cx0 + 20} ${top - 62}, ${cx0 + 58} ${top - 56}, ${cx0 + 66} ${top - 40} C ${cx0 + 46} ${top - 22}, ${cx0 + 18} ${top - 22}, ${cx0 + 4} ${top - 34} Z` }),
    s('path', { class: 'leaf-vein', d: `M ${cx0 + 8} ${top - 34} Q ${cx0 + 36} ${top - 44} ${cx0 + 62} ${top - 40}` }),
  );

  let index = 0;
  rows.forEach((count, row) => {
    const y = top + row * DY;
    const x0 = cx0 - ((count - 1) * DX) / 2;
    for (let i = 0; i < count; i += 1) {
      const state = index < board.attached ? 'attached' : index < board.granted ? 'pending' : 'empty';
      const g = s('g', { class: `grape ${state}`, 'data-index': index, transform: `translate(${x0 + i * DX} ${y})` });
      g.append(s('circle', { r: R }));
      if (state === 'attached') g.append(s('ellipse', { class: 'shine', cx: -7, cy: -8, rx: 5, ry: 3.5, transform: 'rotate(-30 -7 -8)' }));
      if (state === 'pending') {
        g.append(s('text', { class: 'grape-plus', 'text-anchor': 'middle', 'dominant-baseline': 'central' }, document.createTextNode('+')));
        if (onPendingTap) {
          // Every waiting grape does the same (attach one), so only the first is a tab stop.
          const cx = x0 + i * DX;
          const button = h('button', {
            type: 'button',
            class: 'grape-button',
            'aria-label': label,
            'data-index': index,
            'data-needs-server': true,
            tabindex: firstButton ? '0' : '-1',
            style: `left:${((cx - R) / width) * 100}%;top:${((y - R) / height) * 100}%;width:${((2 * R) / width) * 100}%;height:${((2 * R) / height) * 100}%`,
          });
          button.addEventListener('click', onPendingTap);
          wrap.append(button);
          firstButton = false;
        }
      }
      svg.append(g);
      index += 1;
    }
  });
  return wrap;
}
