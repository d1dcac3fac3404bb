// qualgent dashboard: a little plain JavaScript on top of server-rendered pages. Everything works
// without it except live updates, the upload progress bar, the copy button and enlarged screenshots.
"use strict";

// Live regions: [data-live-url] is re-fetched every data-live-every ms and its content replaced,
// until the server answers with X-Live-Final: 1 (a run that finished will not change again). With
// data-live-events (the run events of the page, Server-Sent Events), a change is fetched at once too;
// the polls go on regardless, so a page without the stream is as live as before.
function startLive(el) {
  if (el.dataset.liveFinal === "1") return;
  const every = parseInt(el.dataset.liveEvery || "2000", 10);
  let last = null;
  let timer = null;
  let done = false;
  let source = null;
  if (el.dataset.liveEvents && window.EventSource) {
    source = new EventSource(el.dataset.liveEvents);
    const now = () => { if (!done) { clearTimeout(timer); timer = setTimeout(tick, 50); } };
    for (const type of ["run.queued", "run.started", "run.finished"]) source.addEventListener(type, now);
  }
  function stop() {
    done = true;
    if (source) source.close();
  }
  async function tick() {
    try {
      const response = await fetch(el.dataset.liveUrl, {
        headers: { Accept: "text/html-fragment" }, credentials: "same-origin", cache: "no-store",
      });
      if (response.status === 401) return stop(); // signed out elsewhere: stop polling
      if (response.ok) {
        const html = await response.text();
        // Replacing identical content would move focus and re-read live regions for nothing.
        if (html !== last) {
          const focusedId = document.activeElement && document.activeElement.id;
          el.innerHTML = html;
          last = html;
          if (focusedId && el.contains(document.getElementById(focusedId))) {
            document.getElementById(focusedId).focus();
          }
        }
        if (response.headers.get("X-Live-Final") === "1") return stop();
      }
    } catch (e) {
      // The server restarting or the network dropping: keep trying.
    }
    clearTimeout(timer);
    timer = setTimeout(tick, every);
  }
  timer = setTimeout(tick, every);
}

// Upload with a progress bar: XMLHttpRequest reports upload progress, fetch does not.
function startUpload(form) {
  const progress = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/apps/upload");
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.setRequestHeader("Accept", "application/json");
    progress.hidden = false;
    progress.value = 0;
    status.textContent = "Uploading…";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) {
        progress.value = Math.round((e.loaded / e.total) * 100);
        status.textContent = `Uploading… ${progress.value}%`;
      }
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 200) {
        progress.value = 100;
        status.textContent = "Uploaded. Reading the package…";
        window.location.reload();
      } else {
        status.textContent = (body && body.error && body.error.message) || `Upload failed (${xhr.status}).`;
        status.classList.add("error");
      }
    });
    xhr.addEventListener("error", () => { status.textContent = "The upload was interrupted."; });
    const data = new FormData(form);
    if (!data.get("os")) data.delete("os");
    xhr.send(data);
  });
}

// Copy a new API key; the Clipboard API needs a secure context, so fall back to selecting the text.
function startCopy(button) {
  button.addEventListener("click", async () => {
    const input = document.getElementById(button.dataset.copy);
    const status = document.getElementById("copy-status");
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = "Copied.";
    } catch (e) {
      input.focus();
      input.select();
      const ok = document.execCommand && document.execCommand("copy");
      status.textContent = ok ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });
}

// The run form: only devices of the chosen build's platform can run it, so offer only those.
function startPlatformMatch(form) {
  const build = form.querySelector("#run-app");
  const device = form.querySelector("#run-device");
  function sync() {
    const platform = build.selectedOptions[0] && build.selectedOptions[0].dataset.platform;
    let firstMatch = null;
    for (const option of device.options) {
      const match = !platform || option.dataset.platform === platform;
      option.disabled = !match;
      option.hidden = !match;
      if (match && !firstMatch) firstMatch = option;
    }
    if (device.selectedOptions[0] && device.selectedOptions[0].disabled && firstMatch) firstMatch.selected = true;
  }
  build.addEventListener("change", sync);
  sync();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-enlarge]");
  const dialog = document.getElementById("shot-dialog");
  if (!link || !dialog || !dialog.showModal) return;
  event.preventDefault();
  const img = document.getElementById("shot-dialog-img");
  img.src = link.href;
  img.alt = (link.querySelector("img") || {}).alt || "Screenshot";
  dialog.showModal();
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live-url]").forEach(startLive);
  const upload = document.getElementById("upload-form");
  if (upload) startUpload(upload);
  document.querySelectorAll("button[data-copy]").forEach(startCopy);
  document.querySelectorAll("form[data-match-platform]").forEach(startPlatformMatch);
});
