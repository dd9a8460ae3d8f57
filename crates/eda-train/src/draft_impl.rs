//! [`TrainableDraft`](crate::TrainableDraft) for `eda_draft::EdaDraft`, and stage builders.

/// `EdaDraft` plugs into the trainer through this implementation.
mod eda_draft_impl {
    use super::*;
    use eda_draft::EdaDraft;

    impl TrainableDraft for EdaDraft {
        fn hidden_size(&self) -> usize {
            self.config().hidden_size
        }

        fn vocab_size(&self) -> usize {
            self.config().vocab_size
        }

        fn forward_train(&self, tokens: Tensor<2, Int>, features: Tensor<3>) -> TrainForward {
            let out = EdaDraft::forward_train(self, tokens, features);
            TrainForward { hidden: out.hidden, aux_loss_shared: out.aux_loss_shared, aux_loss_private: out.aux_loss_private }
        }

        fn logits3(&self, hidden: Tensor<3>) -> Tensor<3> {
            self.logits(hidden)
        }

        fn save_draft(&self, dir: &Path) -> Result<()> {
            self.save(dir)
        }
    }
}
