// The answer's two figures, drawn as inline SVG from the numbers the API sends: the tail plot (1 - CDF of the
// positive scores on log-log axes, with the fitted power law) and the layer heatmap (blocks x top sequences).
// Built with DOM calls only; every label (record ids come from the corpus) is set with textContent.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const SUPERSCRIPTS = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };
const INK = "#222";
const AXIS = "#555";
const TICK = "#444";
const CHAR_WIDTH = 6.2; // average width of an 11 px label character, to size the margins
let gradients = 0; // ids of the colour bars' gradients, unique on the page (two answers can be side by side)

function svgElement(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function figure(width, height, label) {
  return svgElement("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label,
    class: "figure", "font-size": 11 });
}

function powerOfTen(exponent) {
  return "10" + String(exponent).split("").map((c) => SUPERSCRIPTS[c]).join("");
}

// A log10 axis over [lo, hi] (in log10 units): labelled ticks at the powers of ten inside it, unlabelled ones at
// 2..9 times them; with fewer than two powers of ten inside, the ticks at 2 and 5 times them are labelled too.
function logTicks(lo, hi) {
  const major = [];
  const minor = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    if (e >= lo && e <= hi) major.push({ at: e, text: powerOfTen(e) });
    for (let m = 2; m <= 9; m++) {
      const at = e + Math.log10(m);
      if (at >= lo && at <= hi) minor.push({ at, text: m === 2 || m === 5 ? `${m}×${powerOfTen(e)}` : "" });
    }
  }
  if (major.length >= 2) return { major, minor: minor.map((t) => ({ at: t.at, text: "" })) };
  return { major: major.concat(minor.filter((t) => t.text)), minor: minor.filter((t) => !t.text) };
}

function logRange(values) {
  const logs = values.map(Math.log10);
  const lo = Math.min(...logs);
  const hi = Math.max(...logs);
  const pad = 0.05 * (hi - lo || 1);
  return [lo - pad, hi + pad];
}

// The tail plot: {x, survival, fit_line, alpha, x_min}; the points as circles, the fit as a line (in the page's
// orange, --pos of explorer.css).
function tailFigure(tail) {
  const width = 520;
  const height = 340;
  const margin = { left: 62, right: 14, top: 10, bottom: 46 };
  const svg = figure(width, height, "1 - CDF of the positive scores on log-log axes with the fitted power law");
  const line = tail.fit_line || [];
  const xs = logRange(tail.x.concat(line.map(([x]) => x))); // the axes hold the points and the whole fitted line
  const ys = logRange(tail.survival.concat(line.map(([, y]) => y)));
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const px = (x) => margin.left + (Math.log10(x) - xs[0]) / (xs[1] - xs[0]) * plotWidth;
  const py = (y) => margin.top + (ys[1] - Math.log10(y)) / (ys[1] - ys[0]) * plotHeight;
  const bottom = margin.top + plotHeight;
  svg.append(svgElement("path", { d: `M${margin.left},${margin.top}V${bottom}H${margin.left + plotWidth}`,
    fill: "none", stroke: AXIS, "stroke-width": 1, class: "axes" }));
  for (const [axis, range] of [["x", xs], ["y", ys]]) {
    const ticks = logTicks(...range);
    for (const [kind, list] of [["major", ticks.major], ["minor", ticks.minor]]) {
      const size = kind === "major" ? 4 : 2;
      for (const tick of list) {
        const at = 10 ** tick.at;
        if (axis === "x") {
          svg.append(svgElement("line", { x1: px(at), x2: px(at), y1: bottom, y2: bottom + size, stroke: TICK }));
          if (tick.text) svg.append(svgElement("text", { x: px(at), y: bottom + 16, "text-anchor": "middle",
            fill: TICK }, tick.text));
        } else {
          svg.append(svgElement("line", { x1: margin.left - size, x2: margin.left, y1: py(at), y2: py(at),
            stroke: TICK }));
          if (tick.text) svg.append(svgElement("text", { x: margin.left - 6, y: py(at) + 4, "text-anchor": "end",
            fill: TICK }, tick.text));
        }
      }
    }
  }
  svg.append(svgElement("text", { x: margin.left + plotWidth / 2, y: height - 8, "text-anchor": "middle",
    fill: INK }, "influence (nats per N copies)"));
  svg.append(svgElement("text", { x: 12, y: margin.top + plotHeight / 2, "text-anchor": "middle", fill: INK,
    transform: `rotate(-90 12 ${margin.top + plotHeight / 2})` }, "1 - CDF  (share of positive scores ≥ x)"));
  const points = svgElement("g", { class: "points", fill: AXIS });
  tail.x.forEach((x, i) => points.append(svgElement("circle", { cx: px(x).toFixed(1),
    cy: py(tail.survival[i]).toFixed(1), r: 1.6 })));
  svg.append(points);
  const legend = [["dot", AXIS, "positive scores"]];
  if (tail.fit_line) {
    const [[x0, y0], [x1, y1]] = tail.fit_line;
    svg.append(svgElement("line", { x1: px(x0), y1: margin.top, x2: px(x0), y2: bottom, stroke: "#999",
      "stroke-dasharray": "4 3", class: "x-min" }));
    svg.append(svgElement("line", { x1: px(x0), y1: py(y0), x2: px(x1), y2: py(y1), "stroke-width": 2,
      class: "fit" }));
    legend.push(["line", null, `power law, alpha = ${Number(tail.alpha).toPrecision(3)}`],
      ["dash", "#999", `x_min = ${Number(tail.x_min).toPrecision(3)}`]);
  }
  legend.forEach(([kind, colour, text], i) => {
    const y = bottom - 12 - 16 * (legend.length - 1 - i);
    const x = margin.left + 10;
    if (kind === "dot") svg.append(svgElement("circle", { cx: x + 8, cy: y, r: 2.5, fill: colour }));
    else if (kind === "line") svg.append(svgElement("line", { x1: x, x2: x + 16, y1: y, y2: y, "stroke-width": 2,
      class: "fit-key" }));
    else svg.append(svgElement("line", { x1: x, x2: x + 16, y1: y, y2: y, stroke: colour, "stroke-dasharray": "4 3" }));
    svg.append(svgElement("text", { x: x + 22, y: y + 4, fill: INK }, text));
  });
  return svg;
}

function mix(from, to, share) {
  return from.map((c, i) => Math.round(c + (to[i] - c) * share));
}

// The colour of an influence value on the diverging scale [negative, zero, positive] at -limit, 0 and +limit.
function divergingColour(value, limit, colours) {
  const share = Math.max(-1, Math.min(1, value / limit));
  const [red, green, blue] = share < 0 ? mix(colours[1], colours[0], -share) : mix(colours[1], colours[2], share);
  return `rgb(${red}, ${green}, ${blue})`;
}

function shortNumber(value) {
  return value === 0 ? "0" : Number(value.toPrecision(3)).toString();
}

// The layer heatmap: {matrix [blocks][columns], block_labels, labels, limit, colours}; the lowest layers at the
// bottom, one rect per cell (hover it for its value), and a colour bar.
function heatmapFigure(heatmap) {
  const blocks = heatmap.matrix.length;
  const columns = heatmap.labels.length;
  const cellWidth = Math.max(16, Math.min(44, 520 / columns));
  const cellHeight = Math.max(12, Math.min(60, 240 / blocks)); // at least 120 px high with 2 blocks or more
  const longest = (labels) => Math.max(0, ...labels.map((label) => label.length)) * CHAR_WIDTH;
  const margin = { left: longest(heatmap.block_labels) + 12, top: 8, right: 90,
    bottom: longest(heatmap.labels) * Math.SQRT1_2 + 34 };
  const xLabel = "top sequences, ordered by centre of mass (lower layers first)";
  const width = Math.max(margin.left + columns * cellWidth + margin.right, longest([xLabel]) + 8);
  const gridBottom = margin.top + blocks * cellHeight;
  const height = gridBottom + margin.bottom;
  const svg = figure(width, height, "Layer heatmap: influence of each block of layers on each top sequence");
  const cells = svgElement("g", { class: "cells" });
  heatmap.matrix.forEach((row, block) => row.forEach((value, column) => {
    const cell = svgElement("rect", { x: margin.left + column * cellWidth, y: gridBottom - (block + 1) * cellHeight,
      width: cellWidth, height: cellHeight, fill: divergingColour(value, heatmap.limit, heatmap.colours) });
    cell.append(svgElement("title", {}, `${heatmap.labels[column]}, ${heatmap.block_labels[block]}: ` +
      `${value >= 0 ? "+" : ""}${Number(value).toPrecision(4)}`));
    cells.append(cell);
  }));
  svg.append(cells);
  heatmap.block_labels.forEach((label, block) => svg.append(svgElement("text", { x: margin.left - 6,
    y: gridBottom - (block + 0.5) * cellHeight + 4, "text-anchor": "end", fill: TICK }, label)));
  heatmap.labels.forEach((label, column) => {
    const x = margin.left + (column + 0.5) * cellWidth;
    svg.append(svgElement("text", { x, y: gridBottom + 12, "text-anchor": "end", fill: TICK,
      transform: `rotate(-45 ${x} ${gridBottom + 12})` }, label));
  });
  const xLabelAt = Math.max(margin.left + columns * cellWidth / 2, longest([xLabel]) / 2 + 4);
  svg.append(svgElement("text", { x: xLabelAt, y: height - 6, "text-anchor": "middle", fill: INK }, xLabel));
  svg.append(colourBar(heatmap, margin.left + columns * cellWidth + 14, margin.top, gridBottom - margin.top));
  return svg;
}

function colourBar(heatmap, x, top, height) {
  const id = `wherefrom-scale-${++gradients}`;
  const bar = svgElement("g", { class: "colour-bar" });
  const gradient = svgElement("linearGradient", { id, x1: 0, y1: 1, x2: 0, y2: 0 });
  heatmap.colours.forEach(([red, green, blue], i) => gradient.append(svgElement("stop", {
    offset: `${50 * i}%`, "stop-color": `rgb(${red}, ${green}, ${blue})` })));
  const defs = svgElement("defs");
  defs.append(gradient);
  bar.append(defs, svgElement("rect", { x, y: top, width: 12, height, fill: `url(#${id})` }));
  for (const [value, at] of [[-heatmap.limit, top + height], [0, top + height / 2], [heatmap.limit, top]]) {
    bar.append(svgElement("line", { x1: x + 12, x2: x + 15, y1: at, y2: at, stroke: TICK }));
    bar.append(svgElement("text", { x: x + 18, y: at + 4, fill: TICK }, shortNumber(value)));
  }
  const middle = top + height / 2;
  bar.append(svgElement("text", { x: x + 66, y: middle, "text-anchor": "middle", fill: INK,
    transform: `rotate(-90 ${x + 66} ${middle})` }, "nats per N copies"));
  return bar;
}
