import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

const useChatSrc = fileURLToPath(new URL('../use-chat/src/index.ts', import.meta.url));
// For `npm run dev`: the Flask/gunicorn server to proxy /api and /ws to.
const backend = process.env.CHAT_BACKEND ?? 'http://127.0.0.1:9001';

export default defineConfig({
  plugins: [react()],
  // Served by Flask at GET / with its files under /assets/.
  base: '/',
  resolve: {
    // The hook is consumed from source; one React for both packages.
    alias: { '@chat/use-chat': useChatSrc },
    dedupe: ['react', 'react-dom'],
  },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: false,
  },
  server: {
    proxy: {
      '/api': backend,
      '/ws': { target: backend.replace(/^http/, 'ws'), ws: true },
    },
  },
});
