// Highlight, in the sticky query index, the section currently on screen.
(function () {
  "use strict";
  var links = Array.prototype.slice.call(document.querySelectorAll("nav.index a[href^='#']"));
  var byId = {};
  links.forEach(function (link) { byId[link.getAttribute("href").slice(1)] = link; });
  if (!("IntersectionObserver" in window) || links.length === 0) { return; }
  var visible = {};
  function update() {
    var current = null;
    links.forEach(function (link) {
      var id = link.getAttribute("href").slice(1);
      if (current === null && visible[id]) { current = link; }
    });
    links.forEach(function (link) { link.classList.toggle("active", link === current); });
  }
  var observer = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) { visible[entry.target.id] = entry.isIntersecting; });
    update();
  }, { rootMargin: "0px 0px -60% 0px" });
  Object.keys(byId).forEach(function (id) {
    var section = document.getElementById(id);
    if (section) { observer.observe(section); }
  });
}());

// "Which neurons carry it": a click on a unit's bar shows the sequences that act through it (one at a time), drawn
// from the panel's data (its <script type="application/json">) the first time the unit is opened.
(function () {
  "use strict";
  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function tokens(pieces, values, opacities, whiteAbove) {
    var box = element("div", "tokens");
    pieces.forEach(function (piece, i) {
      var value = values[i], opacity = opacities[i];
      var span = element("span", "", piece);
      span.title = (value < 0 ? "" : "+") + value;
      if (opacity !== null) {
        span.className = (value > 0 ? "p" : "n") + (opacity > whiteAbove ? " w" : "");
        span.style.setProperty("--o", String(opacity / 1000));
      }
      box.appendChild(span);
    });
    return box;
  }
  function draw(detail, data) {
    var list = detail.querySelector("ol.sequences");
    data.units[Number(detail.getAttribute("data-unit"))].forEach(function (entry) {
      var sequence = data.sequences[String(entry[0])];
      var item = element("li", "unit-seq"), head = element("div", "seq-head");
      var through = element("span", "score " + (entry[2] ? "pos" : "neg"), entry[1]);
      through.title = "influence through this unit";
      var id = element("span", "rid", sequence.id);
      id.title = "record id (row " + entry[0] + ")";
      head.append(through, " ", element("span", "stat", "of " + sequence.score + " in all"), " ", id);
      item.append(head, entry.length > 3 ? tokens(sequence.pieces, entry[3], entry[4], data.white_above)
        : element("div", "tokens plain", sequence.text));
      list.appendChild(item);
    });
    detail.setAttribute("data-drawn", "");
  }
  Array.prototype.forEach.call(document.querySelectorAll(".unit-panel"), function (panel) {
    var buttons = Array.prototype.slice.call(panel.querySelectorAll("button.unit-bar"));
    var data = null;
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        var open = button.getAttribute("aria-expanded") !== "true";
        var detail = document.getElementById(button.getAttribute("data-detail"));
        buttons.forEach(function (other) {
          other.setAttribute("aria-expanded", "false");
          document.getElementById(other.getAttribute("data-detail")).hidden = true;
        });
        if (open && !detail.hasAttribute("data-drawn")) {
          data = data || JSON.parse(panel.querySelector("script.unit-data").textContent);
          draw(detail, data);
        }
        button.setAttribute("aria-expanded", open ? "true" : "false");
        detail.hidden = !open;
      });
    });
  });
}());
