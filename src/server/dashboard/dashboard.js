// defsync dashboard: small progressive enhancements. Every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // After a refused save, put the cursor on the line the error names.
  const error = document.getElementById("form-error");
  const text = document.getElementById("text");
  if (error && text && error.dataset.line) {
    const line = Number(error.dataset.line);
    const lines = text.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    const end = start + (lines[line - 1] || "").length;
    text.focus();
    text.setSelectionRange(start, end);
  }
  // While a pull is queued or running, refresh the page to show how it ends: 5 s after the last
  // thing the user did, never while a field has the focus or the keyboard has moved the focus
  // (a refresh would lose the place), and never once a form is sent or a link followed (it would
  // throw away the answer the user is waiting for).
  if (document.querySelector(".history .status.queued, .history .status.running")) {
    let timer;
    let byKeyboard = false;
    const later = (event) => {
      if (event) byKeyboard = event.type === "keydown";
      clearTimeout(timer);
      timer = setTimeout(() => {
        const active = document.activeElement;
        const busy =
          active &&
          active !== document.body &&
          (byKeyboard || active.matches("input, textarea, select, [contenteditable]"));
        if (!busy) window.location.reload();
        // Armed again: a reload that another navigation cancels must not end the refreshing.
        later();
      }, 5000);
    };
    const leaving = () => {
      clearTimeout(timer);
      for (const type of ["pointerdown", "keydown"]) document.removeEventListener(type, later);
    };
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, later);
    document.addEventListener("submit", leaving);
    window.addEventListener("pagehide", leaving);
    document.addEventListener("click", (e) => {
      const link = e.target.closest("a[href]");
      // A link opened in another tab or window (a modifier key, `target`) leaves this page as it is.
      const elsewhere = e.ctrlKey || e.metaKey || e.shiftKey || e.altKey || e.button !== 0 || link?.target;
      if (link && !elsewhere && !link.getAttribute("href").startsWith("#")) leaving();
    });
    later();
  }
});
