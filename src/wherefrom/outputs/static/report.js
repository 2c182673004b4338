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

// "Which neurons carry it": a click on a unit's bar shows the sequences that act through it (one at a time).
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll(".unit-panel"), function (panel) {
    var buttons = Array.prototype.slice.call(panel.querySelectorAll("button.unit-bar"));
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        var open = button.getAttribute("aria-expanded") !== "true";
        buttons.forEach(function (other) {
          other.setAttribute("aria-expanded", "false");
          document.getElementById(other.getAttribute("data-detail")).hidden = true;
        });
        button.setAttribute("aria-expanded", open ? "true" : "false");
        document.getElementById(button.getAttribute("data-detail")).hidden = !open;
      });
    });
  });
}());
