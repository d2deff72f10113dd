/** Kept for importers outside the capture code (bench/); new code imports `./quality/index.js`. */
export * from "./quality/index.js";
