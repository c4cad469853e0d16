// resdsl's interactive figure: draws the columns that resdsl.backends.draw read from
// the IR (embedded as JSON), with pan and zoom, figures on hover, and blocks and
// stages that collapse and expand. Self-contained: it loads nothing.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("figure-data").textContent);
  const svg = document.getElementById("figure");
  const view = document.getElementById("viewport");
  const tip = document.getElementById("tooltip");
  const NS = "http://www.w3.org/2000/svg";
  const W = 176, H = 24, STEP = 34, LANE = W + 24, ARCS = 90, NOTES = 96, GAP = (STEP - H) / 2;
  const collapsed = new Set(data.collapsed);

  function element(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    (parent || view).appendChild(node);
    return node;
  }
  function text(content, attrs, parent) {
    const node = element("text", attrs, parent);
    node.textContent = content;
    return node;
  }
  function count(value) {
    return value.toLocaleString("en-US");
  }

  // One column's visible boxes: its own, or a summary where a block or stage is
  // collapsed, each in a visible row (vrow): the rows the figure gave the boxes, a
  // collapsed block's or stage's rows made one.
  function rows(column, number) {
    const out = [], where = {}, summaries = {}, rowIndex = {};
    let count = 0;
    const ordered = column.boxes.map(function (box, i) { return [box, i]; });
    ordered.sort(function (a, b) { return a[0].row - b[0].row || a[1] - b[1]; });
    for (const pair of ordered) {
      const box = pair[0];
      let group = null, key, shown;
      if (box.stage && collapsed.has(number + ":stage:" + box.stage)) group = column.stages[box.stage];
      else if (box.block && collapsed.has(number + ":block:" + box.block)) group = column.blocks[box.block];
      if (group) {
        key = "g:" + group.group;
        shown = summaries[key];
        if (!shown) {
          shown = summaries[key] = Object.assign({}, group, { summary: true, lane: 0 });
          out.push(shown);
        }
      } else {
        key = "r:" + box.row;
        shown = Object.assign({}, box);
        out.push(shown);
      }
      if (!(key in rowIndex)) rowIndex[key] = count++;
      if (shown.vrow === undefined) shown.vrow = rowIndex[key];
      where[box.key] = shown;
    }
    out.sort(function (a, b) { return a.vrow - b.vrow; });
    const lanes = Math.max.apply(null, [0].concat(column.boxes.map(function (box) { return -box.lane; })));
    return { rows: out, where: where, count: count, lanes: lanes };
  }

  // The spatial size a row outputs (a flat output counts as 1), or null.
  function sizeOf(row) {
    return row.shape ? (row.shape.length === 3 ? row.shape[1] : 1) : null;
  }

  // Where the main column's size changes to one it keeps from there on (as
  // Column.size_changes: not on a way down and back up, as an attention's pooling):
  // [size, row] pairs, the first row included.
  function changes(laid) {
    const main = laid.rows.filter(function (row) { return row.lane === 0 && sizeOf(row) !== null; });
    const kept = [];
    let largest = 0;
    for (let i = main.length - 1; i >= 0; i--) {
      const s = sizeOf(main[i]);
      if (s >= largest) kept.unshift([s, main[i]]);
      largest = Math.max(largest, s);
    }
    return kept.filter(function (pair, i) { return i === 0 || pair[0] !== kept[i - 1][0]; });
  }

  // Each visible row's top, a STEP below the last, plus the gaps that align sizes.
  function place(laid, gaps) {
    const ys = [];
    let y = 50;
    for (let v = 0; v < laid.count; v++) {
      y += gaps[v] || 0;
      ys.push(y);
      y += STEP;
    }
    for (const row of laid.rows) row.y = ys[row.vrow];
    return y;
  }

  // As in the paper's Fig. 3, the rows where the columns reach an output size are level:
  // for each size shared by columns of one input size (whose sizes only shrink, so
  // that they come in one order), the columns that reach it sooner wait with a gap,
  // just below the main column's box before it.
  function align(layouts) {
    const gaps = layouts.map(function () { return {}; });
    const reach = layouts.map(function (laid) {
      const found = changes(laid);
      const shrinking = found.every(function (pair, i) { return i === 0 || pair[0] < found[i - 1][0]; });
      return shrinking ? found : [];
    });
    const keys = {};
    reach.forEach(function (found, number) {
      for (const pair of found) {
        const key = found[0][0] + ":" + pair[0];
        (keys[key] = keys[key] || { first: found[0][0], size: pair[0], places: [] }).places.push([number, pair[1]]);
      }
    });
    const shared = Object.values(keys).filter(function (k) { return k.places.length > 1; });
    shared.sort(function (a, b) { return a.first - b.first || b.size - a.size; });
    for (const key of shared) {
      layouts.forEach(function (laid, number) { place(laid, gaps[number]); });
      const level = Math.max.apply(null, key.places.map(function (p) { return p[1].y; }));
      for (const p of key.places) {
        const shift = level - p[1].y;
        if (shift <= 0) continue;
        const laid = layouts[p[0]];
        let at = 0;
        for (const row of laid.rows) if (row.lane === 0 && row.vrow < p[1].vrow) at = row.vrow + 1;
        gaps[p[0]][at] = (gaps[p[0]][at] || 0) + shift;
      }
    }
    return gaps;
  }

  function draw() {
    while (view.firstChild) view.removeChild(view.firstChild);
    let x = 0, right = 0, bottom = 0;
    const layouts = data.columns.map(function (column, number) { return rows(column, number); });
    const gaps = align(layouts);
    data.columns.forEach(function (column, number) {
      const laid = layouts[number];
      x += NOTES + laid.lanes * LANE;
      text(column.title, { x: x + W / 2, y: 16, class: "title" });
      text(column.subtitle, { x: x + W / 2, y: 32, class: "subtitle" });
      const y = place(laid, gaps[number]);
      for (const row of laid.rows) row.x = x + row.lane * LANE;
      for (const pair of changes(laid)) {
        text("output size: " + pair[0], { x: x - laid.lanes * LANE - 8, y: pair[1].y + 16, class: "note" });
      }
      const drawn = new Set();
      for (const edge of column.edges) {
        const from = laid.where[edge.source], to = laid.where[edge.target];
        if (!from || !to || from === to || drawn.has(from.key + " " + to.key)) continue;
        drawn.add(from.key + " " + to.key);
        link(from, to, edge, x);
      }
      for (const arc of column.arcs) {
        const from = laid.where[arc.source], to = laid.where[arc.target];
        if (!from || !to || from === to) continue;
        shortcut(from, to, arc);
      }
      for (const row of laid.rows) box(row, number);
      right = x + W + ARCS;
      bottom = Math.max(bottom, y);
      x += W + ARCS;
    });
    extent = [right, bottom + 10];
    if (!svg.hasAttribute("viewBox")) firstView();
  }

  // The first view: the whole figure where its text stays readable; a tall or wide one
  // from its top left, at a scale where text is at least MIN_SCALE of its size ("whole
  // figure" shows it all).
  const MIN_SCALE = 0.8;
  let extent = [1, 1];
  function firstView() {
    const rect = svg.getBoundingClientRect();
    const whole = Math.min(rect.width / extent[0], rect.height / extent[1]);
    if (whole >= MIN_SCALE || !rect.width || !rect.height) return wholeView();
    const scale = Math.min(1, Math.max(MIN_SCALE, rect.width / extent[0]));
    svg.setAttribute("viewBox", [0, 0, rect.width / scale, rect.height / scale].join(" "));
  }
  function wholeView() {
    svg.setAttribute("viewBox", "0 0 " + extent[0] + " " + extent[1]);
  }

  // An edge: straight down a lane; from a lane into another just below its source and
  // just above its target; from the main column past some of its boxes ("skip"), a
  // curve right of it, as a shortcut.
  function link(from, to, edge, columnX) {
    const x1 = from.x + W / 2, y1 = from.y + H, x2 = to.x + W / 2, y2 = to.y;
    const ends = { "data-from": from.key, "data-to": to.key };
    if (edge.kind === "skip" && from.lane === 0 && to.lane === 0 && to.y > from.y + STEP) {
      const xr = from.x + W, a = from.y + H / 2, b = to.y + H / 2, bend = Math.min(60, 10 + (b - a) / 8);
      ends.d = "M" + xr + "," + a + " C" + (xr + bend) + "," + a + " " + (xr + bend) + "," + b + " " + xr + "," + b;
      ends.class = "link skip";
      return element("path", ends);
    }
    // The lane of the end beside the main column (the layout kept its way free).
    const lane = columnX + (from.lane || to.lane) * LANE + W / 2;
    const points = [[x1, y1]];
    if (x1 !== x2 && y2 > y1 + 2 * GAP) {
      if (lane !== x1) points.push([lane, y1 + GAP]);
      if (lane !== x2) points.push([lane, y2 - GAP]);
    }
    points.push([x2, y2]);
    ends.d = "M" + points.map(function (p) { return p.join(","); }).join(" L");
    ends.class = "link";
    return element("path", ends);
  }
  function shortcut(from, to, arc) {
    const x = from.x + W, y1 = from.y + H / 2, y2 = to.y + H / 2, bend = Math.min(70, 14 + (y2 - y1) / 6);
    const path = element("path", {
      d: "M" + x + "," + y1 + " C" + (x + bend) + "," + y1 + " " + (x + bend) + "," + y2 + " " + (to.x + W) + "," + y2,
      class: "shortcut " + arc.kind + (arc.changes_dimensions ? " dashed" : ""),
    });
    const title = element("title", {}, path);
    title.textContent = arc.block + ": " + arc.kind + " shortcut" + (arc.names.length ? " (" + arc.names.join(", ") + ", " + count(arc.params) + " params)" : "");
    if (arc.label) text(arc.label, { x: x + bend * 0.8, y: (y1 + y2) / 2, class: "arc-label" });
  }

  function box(row, number) {
    const g = element("g", { class: "box " + (row.summary ? "summary" : row.style) + (row.branch ? " side" : ""), "data-key": row.key });
    const round = row.style === "join" ? H / 2 : 5;
    const width = row.style === "join" ? H : W;
    const left = row.x + (W - width) / 2;
    element("rect", { x: left, y: row.y, width: width, height: H, rx: round, fill: row.fill || "white" }, g);
    text(row.label.split("\\n")[0], { x: row.x + W / 2, y: row.y + 16 }, g);
    g.addEventListener("mousemove", function (event) { show(row, event); });
    g.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    g.addEventListener("click", function (event) { toggle(row, number, event.shiftKey); });
  }

  function show(row, event) {
    const names = row.names || [];
    const shown = names.slice(0, 4).join(", ") + (names.length > 4 ? ", +" + (names.length - 4) + " more" : "");
    tip.innerHTML = "";
    const lines = [
      ["module", shown || "(input)"],
      ["output", row.shape ? row.shape.join("x") : ""],
      ["params", count(row.params)],
      ["MACs", count(row.macs)],
    ];
    const heading = document.createElement("b");
    heading.textContent = row.label.split("\\n").join(" ");
    tip.appendChild(heading);
    for (const pair of lines) {
      const div = document.createElement("div");
      div.className = "tip-" + pair[0].toLowerCase();
      div.textContent = pair[0] + ": " + pair[1];
      tip.appendChild(div);
    }
    tip.style.display = "block";
    tip.style.left = event.clientX + 14 + "px";
    tip.style.top = event.clientY + 14 + "px";
  }

  // Click: a layer collapses its block, a summary expands. Shift-click: the stage.
  function toggle(row, number, stage) {
    let key = null;
    if (row.summary) key = number + ":" + row.group;
    else if (stage && row.stage) key = number + ":stage:" + row.stage;
    else if (row.block) key = number + ":block:" + row.block;
    else if (row.stage) key = number + ":stage:" + row.stage;
    if (key === null) return;
    if (collapsed.has(key)) collapsed.delete(key);
    else collapsed.add(key);
    tip.style.display = "none";
    draw();
  }

  function setAll(kind) {
    collapsed.clear();
    if (kind) data.columns.forEach(function (column, number) {
      for (const name in column[kind + "s"]) collapsed.add(number + ":" + kind + ":" + name);
    });
    draw();
  }
  document.getElementById("expand").addEventListener("click", function () { setAll(null); });
  document.getElementById("blocks").addEventListener("click", function () { setAll("block"); });
  document.getElementById("stages").addEventListener("click", function () { setAll("stage"); });
  document.getElementById("whole").addEventListener("click", wholeView);

  // Pan by dragging, zoom with the wheel about the pointer.
  function box4() { return svg.getAttribute("viewBox").split(" ").map(Number); }
  svg.addEventListener("wheel", function (event) {
    event.preventDefault();
    const v = box4(), rect = svg.getBoundingClientRect();
    const factor = event.deltaY > 0 ? 1.15 : 1 / 1.15;
    const px = v[0] + ((event.clientX - rect.left) / rect.width) * v[2];
    const py = v[1] + ((event.clientY - rect.top) / rect.height) * v[3];
    const w = v[2] * factor, h = v[3] * factor;
    svg.setAttribute("viewBox", [px - (px - v[0]) * factor, py - (py - v[1]) * factor, w, h].join(" "));
  }, { passive: false });
  let drag = null;
  svg.addEventListener("mousedown", function (event) { drag = { x: event.clientX, y: event.clientY, v: box4() }; });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (event) {
    if (!drag) return;
    const rect = svg.getBoundingClientRect(), v = drag.v;
    const dx = ((event.clientX - drag.x) / rect.width) * v[2], dy = ((event.clientY - drag.y) / rect.height) * v[3];
    svg.setAttribute("viewBox", [v[0] - dx, v[1] - dy, v[2], v[3]].join(" "));
  });

  draw();
})();
