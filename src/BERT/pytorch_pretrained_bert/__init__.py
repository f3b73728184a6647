"""The project's BERT package: the 2019 `pytorch_pretrained_bert` API, written here."""
from .modeling import (BertConfig, BertForSequenceClassification, BertModel, ClassifierOutput,
                       EncoderOutput, count_parameters, load_config, load_pretrained_weights,
                       normalize_state_dict, plain_schedule)
from .optimization import SCHEDULES, BertAdam
from .serialization import (atomic_link, atomic_write, load_safetensors, load_state_dict_file,
                            save_safetensors)
from .tokenization import (TOKENIZERS, BasicTokenizer, BertTokenizer, MPNetTokenizer,
                           WordpieceTokenizer)

__all__ = ["BertConfig", "BertModel", "BertForSequenceClassification", "ClassifierOutput",
           "EncoderOutput", "count_parameters", "load_config", "load_pretrained_weights",
           "normalize_state_dict", "plain_schedule", "BertAdam", "SCHEDULES", "atomic_link",
           "atomic_write", "load_safetensors", "load_state_dict_file", "save_safetensors",
           "BertTokenizer", "BasicTokenizer", "WordpieceTokenizer", "MPNetTokenizer", "TOKENIZERS"]
