// Saved cohorts: in this browser's localStorage, as the cohort language's JSON and nothing else
// (no answer, no token, no identifier). Export a file or share a link to move one elsewhere.

const KEY = "fedgate.cohorts";

export function savedCohorts(storage = localStorage) {
  const read = () => {
    try {
      const data = JSON.parse(storage.getItem(KEY) || "{}");
      return data && typeof data === "object" && !Array.isArray(data) ? data : {};
    } catch {
      return {};
    }
  };
  const write = (data) => storage.setItem(KEY, JSON.stringify(data));
  return {
    names: () => Object.keys(read()).sort((a, b) => a.localeCompare(b)),
    get: (name) => read()[name] || null,
    save(name, cohort) {
      const data = read();
      data[name] = cohort;
      write(data);
    },
    rename(from, to) {
      const data = read();
      if (!(from in data) || from === to) return;
      data[to] = data[from];
      delete data[from];
      write(data);
    },
    remove(name) {
      const data = read();
      delete data[name];
      write(data);
    },
  };
}
