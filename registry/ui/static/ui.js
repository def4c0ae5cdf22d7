// The registry UI's only script: copy buttons (a pull command to the clipboard). Pages work without it.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const text = button.dataset.copy;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch (_) {
    // No clipboard API (plain HTTP beyond localhost): copy through a selected text area instead.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    copied = document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = copied ? "Copied" : "Copy failed";
  button.dataset.copied = copied ? "true" : "false";
  setTimeout(() => { button.textContent = label; }, 1500);
});
