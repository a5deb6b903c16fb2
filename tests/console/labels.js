// Every visible control (input, select, textarea, button, link, summary) without an accessible name: the name a
// screen reader would say, from aria-labelledby, aria-label, a <label> (for= or around it), its text or its title.
() => {
  const name = (el) => {
    const by = el.getAttribute("aria-labelledby");
    if (by) return by.split(/\s+/).map((id) => (document.getElementById(id) || {}).textContent || "").join(" ").trim();
    if (el.getAttribute("aria-label")) return el.getAttribute("aria-label").trim();
    if (el.labels && el.labels.length) return Array.from(el.labels).map((l) => l.textContent).join(" ").trim();
    if (["BUTTON", "A", "SUMMARY"].includes(el.tagName)) return (el.textContent || "").trim() || (el.title || "");
    if (el.tagName === "INPUT" && ["submit", "button"].includes(el.type)) return el.value || "";
    return el.title || "";
  };
  const bad = [];
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea, button, a[href], summary")) {
    if (!el.getClientRects().length || getComputedStyle(el).visibility === "hidden") continue;
    if (!name(el)) bad.push(el.outerHTML.slice(0, 120));
  }
  return bad;
}
