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
  // While a pull is queued or running, refresh the page now and then to show how it ends,
  // unless the user is in the middle of something.
  if (document.querySelector(".history .status.queued, .history .status.running")) {
    setTimeout(() => {
      const active = document.activeElement;
      if (!active || active === document.body) window.location.reload();
    }, 5000);
  }
});
