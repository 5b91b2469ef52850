// Starts Swagger UI on /docs from the installed swagger-ui-bundle files (api/routes/docs.py):
// a file of its own because the page allows no inline script.
window.addEventListener("load", () => {
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No validator badge: it would call swagger.io from the reader's browser.
    validatorUrl: null,
  });
});
