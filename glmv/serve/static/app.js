// The chat page: builds OpenAI chat requests (media as data: URLs), streams the answer, shows the model's
// thinking in a collapsible block and draws grounding boxes over the image they refer to.
// Model output is only ever inserted as text (textContent), never as HTML.
(function () {
  const $ = (id) => document.getElementById(id);
  const BOX_TAGS = /<\|begin_of_box\|>|<\|end_of_box\|>/g;
  const history = []; // OpenAI messages of this conversation
  let attachments = []; // {kind: "image"|"video", url: data URL, name}
  let lastImage = null; // data URL of the latest image sent: what boxes in answers refer to
  let controller = null; // aborts the running request

  // --- settings (kept in localStorage, the key included: it never leaves this browser but for this server) --
  const fields = ["api-key", "temperature", "top-p", "max-tokens"];
  for (const id of fields) {
    const saved = localStorage.getItem("glmv:" + id);
    if (saved !== null) $(id).value = saved;
    $(id).addEventListener("change", () => localStorage.setItem("glmv:" + id, $(id).value));
  }
  $("thinking").checked = localStorage.getItem("glmv:thinking") !== "false";
  $("thinking").addEventListener("change", () => localStorage.setItem("glmv:thinking", $("thinking").checked));
  $("api-key").addEventListener("change", loadModel);

  function headers() {
    const h = { "Content-Type": "application/json" };
    if ($("api-key").value) h.Authorization = "Bearer " + $("api-key").value;
    return h;
  }

  async function errorMessage(response) {
    try {
      return (await response.json()).error.message;
    } catch (e) {
      return `HTTP ${response.status}`;
    }
  }

  let model = null;
  async function loadModel() {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) {
      model = null;
      $("model").textContent = response.status === 401 ? "set the API key in Settings" : await errorMessage(response);
      return;
    }
    model = (await response.json()).data[0].id;
    $("model").textContent = model;
  }

  // --- attachments ----------------------------------------------------------------------------------------
  function readAsDataURL(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  $("files").addEventListener("change", async (event) => {
    for (const file of event.target.files) {
      const kind = file.type.startsWith("video/") ? "video" : "image";
      attachments.push({ kind, url: await readAsDataURL(file), name: file.name });
    }
    event.target.value = "";
    showAttachments();
  });

  function mediaElement(item) {
    const el = document.createElement(item.kind === "video" ? "video" : "img");
    el.src = item.url;
    el.title = item.name || item.kind;
    if (item.kind === "video") el.muted = true;
    return el;
  }

  function showAttachments() {
    const box = $("attachments");
    box.replaceChildren();
    attachments.forEach((item, i) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.title = "remove";
      remove.onclick = () => { attachments.splice(i, 1); showAttachments(); };
      chip.append(mediaElement(item), remove);
      box.append(chip);
    });
  }

  // --- messages -------------------------------------------------------------------------------------------
  function addMessage(role) {
    const el = document.createElement("article");
    el.className = "msg " + role;
    $("log").append(el);
    return el;
  }

  function showUser(text, media) {
    const el = addMessage("user");
    const row = document.createElement("div");
    row.className = "media";
    media.forEach((item) => row.append(mediaElement(item)));
    const body = document.createElement("div");
    body.className = "content";
    body.textContent = text;
    el.append(row, body);
  }

  function newAnswer(image) {
    const el = addMessage("assistant");
    const thinking = document.createElement("details");
    thinking.className = "thinking";
    thinking.hidden = true;
    thinking.innerHTML = "<summary>Thinking</summary><div class='reasoning'></div>";
    const content = document.createElement("div");
    content.className = "content";
    el.append(thinking, content);
    el.dataset.image = image || "";
    return el;
  }

  // Show answer text (box tags removed) and, when it holds boxes and an image was sent, the image with the
  // boxes drawn over it. Called on every streamed delta; also callable from tests.
  function renderAnswer(el, text) {
    el.querySelector(".content").textContent = text.replace(BOX_TAGS, "");
    const boxes = window.glmvBoxes.parseBoxes(text);
    if (!boxes.length || !el.dataset.image) return Promise.resolve(0);
    let figure = el.querySelector("figure");
    if (!figure) {
      figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = el.dataset.image;
      figure.append(img, document.createElement("canvas"));
      el.append(figure);
    }
    const img = figure.querySelector("img");
    return img.decode().then(() =>
      window.glmvBoxes.drawBoxes(figure.querySelector("canvas"), img.naturalWidth, img.naturalHeight, boxes));
  }

  function renderReasoning(el, text) {
    const block = el.querySelector(".thinking");
    block.hidden = !text;
    block.querySelector(".reasoning").textContent = text;
  }

  function showError(el, message) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = message;
    el.append(p);
  }

  // --- sending --------------------------------------------------------------------------------------------
  function request() {
    const number = (id) => Number($(id).value);
    return {
      model,
      messages: history,
      stream: true,
      stream_options: { include_usage: true },
      temperature: number("temperature"),
      top_p: number("top-p"),
      max_tokens: number("max-tokens"),
      chat_template_kwargs: { enable_thinking: $("thinking").checked },
    };
  }

  async function send(text) {
    if (!model) await loadModel();
    const media = attachments;
    attachments = [];
    showAttachments();
    const images = media.filter((m) => m.kind === "image");
    if (images.length) lastImage = images[images.length - 1].url;
    const parts = media.map((m) => m.kind === "video"
      ? { type: "video_url", video_url: { url: m.url } }
      : { type: "image_url", image_url: { url: m.url } });
    history.push({ role: "user", content: [...parts, { type: "text", text }] });
    showUser(text, media);
    const el = newAnswer(lastImage);
    let content = "", reasoning = "";
    busy(true);
    controller = new AbortController();
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(request()), signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const chunk of window.readSSE(response)) {
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) el.dataset.usage = JSON.stringify(chunk.usage);
        const delta = (chunk.choices[0] || {}).delta || {};
        if (delta.reasoning_content) renderReasoning(el, (reasoning += delta.reasoning_content));
        if (delta.content) renderAnswer(el, (content += delta.content));
      }
      history.push({ role: "assistant", content });
    } catch (e) {
      history.pop(); // the turn failed: do not send it again with the next question
      showError(el, e.name === "AbortError" ? "stopped" : e.message);
    } finally {
      controller = null;
      el.dataset.done = "1";
      busy(false);
    }
  }

  function busy(on) {
    $("send").disabled = on;
    $("stop").hidden = !on;
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || controller) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("clear").addEventListener("click", () => {
    history.length = 0;
    lastImage = null;
    $("log").replaceChildren();
  });

  window.glmvChat = { renderAnswer, renderReasoning };
  loadModel();
})();
