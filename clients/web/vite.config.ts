import { defineConfig } from "vite";

// Served by sandboxd under /ui/ (see src/web/ in the repository root); hashed files under
// assets/ are cached forever, index.html never.
export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    // No inline scripts or styles: the page's Content-Security-Policy forbids them.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
});
