// Starts Swagger UI on /docs. A file, not an inline script: the CSP allows only 'self'.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // Streams do not render well in "Try it out"; curl or the page at / show them live.
  supportedSubmitMethods: ["get", "head"],
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
