//! Tensors as inferd holds them: what a model takes and gives, typed columns of elements, and
//! rows of a batch with the outputs of its run. Knows ONNX Runtime's value types, nothing above.

pub mod columns;
pub mod rows;
pub mod signature;
