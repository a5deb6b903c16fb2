DROP TABLE prompt_similarity_logs;
