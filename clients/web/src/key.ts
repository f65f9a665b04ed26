// The API key lives in sessionStorage only: it is gone when the tab closes, and "Forget key"
// removes it at once.
const STORAGE_KEY = "sandboxd.apiKey";

export function apiKey(): string | null {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function rememberKey(key: string): void {
  sessionStorage.setItem(STORAGE_KEY, key);
}

export function forgetKey(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}
